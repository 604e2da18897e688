"""3D position from one camera (SIPEC): Isomap features of mask size and position, then least squares.

For each visible animal the inputs are its mask area `a` (pixels) and the mask's centre of mass
`(u, v)` (pixels). As in the paper:

1. a, u, v and their pairwise products a*u, a*v, u*v (computed on z-scored a, u, v, then z-scored
   again, since Isomap works on distances) are embedded by an Isomap with 6 components;
2. the 6 Isomap components plus 1/sqrt(a), a, u, v go into an ordinary least squares regression
   (scikit-learn's LinearRegression) of the world position x, y, z.

Isomap's cost grows with the square of its training set, so it is fitted on at most `max_fit` rows
drawn at random (all rows are embedded and used by the least squares). The fitted model is a set of
plain arrays (`Depth3DParams`): saved as .npz (read with allow_pickle=False, so no file is ever
unpickled) and built into a Keras graph by :mod:`services.tracker.model` for the SavedModel.
`predict` reproduces scikit-learn's Isomap.transform exactly: geodesic distances of a new point to the
training points through its k nearest training points, then the kernel PCA projection.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

log = logging.getLogger("sipec.tracker.depth3d")

INPUT_NAMES: tuple[str, ...] = ("area", "u", "v")
OUTPUT_NAMES: tuple[str, ...] = ("x", "y", "z")
N_COMPONENTS = 6          # Isomap components (the paper)
N_NEIGHBORS = 10
MAX_FIT = 1000


@dataclass
class Depth3DParams:
    """Everything a fitted depth model needs to predict (n = Isomap training rows)."""

    input_mean: np.ndarray       # (3,) of area, u, v
    input_std: np.ndarray        # (3,)
    feature_mean: np.ndarray     # (6,) of the Isomap inputs built from z-scored a, u, v
    feature_std: np.ndarray      # (6,)
    fit_points: np.ndarray       # (n, 6) standardised Isomap inputs of the training rows
    geodesic: np.ndarray         # (n, n) shortest-path distances between them (Isomap's dist_matrix_)
    kernel_col_mean: np.ndarray  # (n,) column means of the training kernel -0.5 * geodesic**2
    kernel_mean: np.ndarray      # () mean of the training kernel
    projection: np.ndarray       # (n, 6) kernel PCA eigenvectors / sqrt(eigenvalues)
    ols_coef: np.ndarray         # (10, 3): 6 Isomap components, 1/sqrt(a), a, u, v -> x, y, z
    ols_intercept: np.ndarray    # (3,)
    n_neighbors: np.ndarray      # () int

    def save(self, path: str | Path) -> None:
        """Write as .npz (plain arrays only)."""
        np.savez(path, **{f.name: np.asarray(getattr(self, f.name)) for f in fields(self)})

    @classmethod
    def load(cls, path: str | Path) -> Depth3DParams:
        """Read a .npz written by `save` (allow_pickle=False: object arrays are refused)."""
        with np.load(path, allow_pickle=False) as data:
            missing = [f.name for f in fields(cls) if f.name not in data.files]
            if missing:
                raise ValueError(f"{path}: not a depth3d parameter file, missing {', '.join(missing)}")
            return cls(**{f.name: data[f.name] for f in fields(cls)})

    @property
    def fit_size(self) -> int:
        return int(self.fit_points.shape[0])


def check_inputs(area_uv: np.ndarray, what: str = "inputs") -> np.ndarray:
    """(N, 3) float64 of area > 0, u, v, all finite; ValueError naming the problem otherwise."""
    x = np.asarray(area_uv, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected an (N, 3) array of area, u, v; got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: area, u and v must be finite")
    if np.any(x[:, 0] <= 0):
        raise ValueError(f"{what}: mask area must be > 0 pixels")
    return x


def _products(z: np.ndarray) -> np.ndarray:
    a, u, v = z[:, 0], z[:, 1], z[:, 2]
    return np.stack([a, u, v, a * u, a * v, u * v], axis=1)


def _safe_std(x: np.ndarray) -> np.ndarray:
    s = x.std(axis=0)
    return np.where(s > 0, s, 1.0)


def isomap_inputs(area_uv: np.ndarray, p: Depth3DParams) -> np.ndarray:
    z = (area_uv - p.input_mean) / p.input_std
    return (_products(z) - p.feature_mean) / p.feature_std


def ols_inputs(embedding: np.ndarray, area_uv: np.ndarray) -> np.ndarray:
    a = area_uv[:, 0:1]
    return np.concatenate([embedding, 1.0 / np.sqrt(a), a, area_uv[:, 1:3]], axis=1)


def embed(features: np.ndarray, p: Depth3DParams, chunk: int = 256) -> np.ndarray:
    """Isomap.transform of standardised features, from the stored arrays."""
    out = np.empty((features.shape[0], p.projection.shape[1]))
    k = int(p.n_neighbors)
    for s in range(0, features.shape[0], chunk):
        f = features[s:s + chunk]
        d = np.sqrt(np.maximum(((f[:, None, :] - p.fit_points[None, :, :]) ** 2).sum(-1), 0.0))
        idx = np.argpartition(d, k - 1, axis=1)[:, :k] if k < d.shape[1] else np.argsort(d, axis=1)
        near = np.take_along_axis(d, idx, axis=1)
        g = np.min(p.geodesic[idx] + near[:, :, None], axis=1)
        kern = -0.5 * g ** 2
        kern = kern - p.kernel_col_mean - kern.mean(axis=1, keepdims=True) + p.kernel_mean
        out[s:s + chunk] = kern @ p.projection
    return out


def predict(p: Depth3DParams, area_uv: np.ndarray) -> np.ndarray:
    """(N, 3) x, y, z for (N, 3) area, u, v."""
    x = check_inputs(area_uv)
    e = embed(isomap_inputs(x, p), p)
    return ols_inputs(e, x) @ p.ols_coef + p.ols_intercept


def fit(area_uv: np.ndarray, xyz: np.ndarray, n_neighbors: int = N_NEIGHBORS, n_components: int = N_COMPONENTS,
        max_fit: int = MAX_FIT, seed: int = 0) -> Depth3DParams:
    """Fit the Isomap (on at most `max_fit` rows) and the least squares (on all rows)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.manifold import Isomap

    x = check_inputs(area_uv, "training inputs")
    y = np.asarray(xyz, dtype=np.float64)
    if y.shape != (x.shape[0], 3) or not np.all(np.isfinite(y)):
        raise ValueError(f"training targets: expected finite (N, 3) x, y, z for N={x.shape[0]}, got {y.shape}")
    if x.shape[0] < max(n_neighbors + 2, n_components + 2, 12):
        raise ValueError(f"training inputs: {x.shape[0]} rows are too few for an Isomap with {n_neighbors} neighbours "
                         f"and {n_components} components")
    in_mean, in_std = x.mean(axis=0), _safe_std(x)
    raw = _products((x - in_mean) / in_std)
    f_mean, f_std = raw.mean(axis=0), _safe_std(raw)
    feats = (raw - f_mean) / f_std
    rng = np.random.default_rng(seed)
    sub = np.sort(rng.choice(x.shape[0], size=min(max_fit, x.shape[0]), replace=False))
    iso = Isomap(n_neighbors=n_neighbors, n_components=n_components)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        iso.fit(feats[sub])
    for w in caught:
        if "connected components" in str(w.message):
            log.debug("isomap: %s", w.message)
    kern = -0.5 * iso.dist_matrix_ ** 2
    col_mean = kern.mean(axis=0)
    kpca = iso.kernel_pca_
    vals, vecs = kpca.eigenvalues_, kpca.eigenvectors_
    proj = np.zeros_like(vecs)
    nz = vals > 0
    proj[:, nz] = vecs[:, nz] / np.sqrt(vals[nz])
    p = Depth3DParams(input_mean=in_mean, input_std=in_std, feature_mean=f_mean, feature_std=f_std,
                      fit_points=feats[sub], geodesic=np.asarray(iso.dist_matrix_, dtype=np.float64),
                      kernel_col_mean=col_mean, kernel_mean=np.asarray(col_mean.mean()), projection=proj,
                      ols_coef=np.zeros((n_components + 4, 3)), ols_intercept=np.zeros(3),
                      n_neighbors=np.asarray(n_neighbors))
    ols = LinearRegression().fit(ols_inputs(embed(feats, p), x), y)
    p.ols_coef, p.ols_intercept = ols.coef_.T.copy(), ols.intercept_.copy()
    return p


def rmse_per_axis(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean((np.asarray(pred) - np.asarray(true)) ** 2, axis=0))


@dataclass
class CrossValidation:
    folds: int
    rows: int
    rmse: np.ndarray             # (3,) depth3d
    rmse_ols_only: np.ndarray    # (3,) least squares on 1/sqrt(a), a, u, v without the Isomap features
    rmse_mean: np.ndarray        # (3,) predicting the training mean (the trivial baseline)


def cross_validate(area_uv: np.ndarray, xyz: np.ndarray, folds: int = 10, **fit_kwargs) -> CrossValidation:
    """K-fold cross-validation over contiguous blocks of rows (rows in frame order: whole stretches of video
    are held out, so neighbouring frames do not leak between training and test)."""
    from sklearn.linear_model import LinearRegression
    from sklearn.model_selection import KFold

    x = check_inputs(area_uv)
    y = np.asarray(xyz, dtype=np.float64)
    if folds < 2 or folds > x.shape[0]:
        raise ValueError(f"folds must be 2 to {x.shape[0]} (the number of rows), not {folds}")
    pred, pred_ols, pred_mean = np.empty_like(y), np.empty_like(y), np.empty_like(y)
    extras = ols_inputs(np.zeros((x.shape[0], 0)), x)
    for train, test in KFold(folds, shuffle=False).split(x):
        p = fit(x[train], y[train], **fit_kwargs)
        pred[test] = predict(p, x[test])
        pred_ols[test] = LinearRegression().fit(extras[train], y[train]).predict(extras[test])
        pred_mean[test] = y[train].mean(axis=0)
    return CrossValidation(folds, x.shape[0], rmse_per_axis(pred, y), rmse_per_axis(pred_ols, y),
                           rmse_per_axis(pred_mean, y))
