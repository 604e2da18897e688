"""depth3d on `sipec synth --camera perspective` data: the method beats a trivial baseline, the
SavedModel reproduces scikit-learn's Isomap + least squares, and nothing is stored as a pickle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from services.tracker import depth3d
from services.tracker.data import load_positions
from sipec.synth.config import SynthConfig
from sipec.synth.pipeline import generate


@pytest.fixture(scope="module")
def positions(tmp_path_factory):
    out = tmp_path_factory.mktemp("persp")
    generate(SynthConfig(animals=4, frames=300, seed=2, width=320, height=240, camera="perspective"), out)
    return load_positions(out / "positions_3d.csv")


def test_positions_csv_is_read_with_camera_facts(positions):
    assert positions.area_uv.shape[1] == 3 and positions.xyz.shape == positions.area_uv.shape
    assert positions.image_size == (320, 240) and positions.room == (1.0, 0.75, 0.25)
    assert np.all(positions.area_uv[:, 0] > 0)


def test_cross_validated_rmse_clearly_beats_the_mean_baseline(positions):
    cv = depth3d.cross_validate(positions.area_uv, positions.xyz, folds=10, max_fit=300)
    assert cv.rows == positions.area_uv.shape[0] and cv.folds == 10
    # floor position: far better than predicting the mean (which is off by ~20 cm)
    assert np.all(cv.rmse[:2] < 0.25 * cv.rmse_mean[:2]), (cv.rmse, cv.rmse_mean)
    assert np.all(cv.rmse[:2] < 0.05)                                      # metres, in a 1.0 x 0.75 m room
    assert np.all(cv.rmse[:2] <= cv.rmse_ols_only[:2] * 1.1)              # Isomap features do not hurt


def test_numpy_prediction_equals_scikit_learn(positions):
    from sklearn.linear_model import LinearRegression
    from sklearn.manifold import Isomap

    x, y = positions.area_uv, positions.xyz
    n = int(0.8 * len(x))
    p = depth3d.fit(x[:n], y[:n], max_fit=n)                      # Isomap on all training rows: no sampling
    feats = depth3d.isomap_inputs(x, p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iso = Isomap(n_neighbors=depth3d.N_NEIGHBORS, n_components=6).fit(feats[:n])
    a = x[:, :1]
    design = np.concatenate([iso.transform(feats), 1 / np.sqrt(a), a, x[:, 1:]], axis=1)
    ols = LinearRegression().fit(design[:n], y[:n])
    np.testing.assert_allclose(depth3d.predict(p, x[n:]), ols.predict(design[n:]), atol=1e-8)


def test_saved_model_round_trip_without_pickle(positions, tmp_path):
    from services.tracker.model import INPUT_NAME, OUTPUT_NAME, build_depth3d_model
    from services.tracker.train import PARAMS_FILE
    from sipec.serving.models import LoadedModel
    from sipec.serving.repository import ModelRepository

    x, y = positions.area_uv, positions.xyz
    n = int(0.8 * len(x))
    p = depth3d.fit(x[:n], y[:n], max_fit=400)
    version = ModelRepository(tmp_path).export(build_depth3d_model(p), "depth3d",
                                               {"module": "tracker", "architecture": "isomap6-ols"})
    p.save(version.path / "assets" / PARAMS_FILE)
    loaded = LoadedModel(ModelRepository(tmp_path).get("depth3d"))
    served = loaded.predict({INPUT_NAME: x[n:].astype(np.float32)}, None, [OUTPUT_NAME])[OUTPUT_NAME]
    reference = depth3d.predict(p, x[n:].astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(served, reference, atol=1e-5)
    # the .npz copy reads back with allow_pickle=False and predicts the same
    again = depth3d.Depth3DParams.load(version.path / "assets" / PARAMS_FILE)
    np.testing.assert_array_equal(depth3d.predict(again, x[n:]), depth3d.predict(p, x[n:]))
    # the version holds only the SavedModel, its variables and the two assets: no pickle, no joblib
    files = {str(f.relative_to(version.path)) for f in version.path.rglob("*") if f.is_file()}
    expected = {"saved_model.pb", "fingerprint.pb", "assets/sipec.json", f"assets/{PARAMS_FILE}",
                "variables/variables.index"}
    assert expected <= files and all(f in expected or f.startswith("variables/variables.data-") for f in files), files
    with np.load(version.path / "assets" / PARAMS_FILE, allow_pickle=False) as npz:
        assert all(npz[k].dtype != object for k in npz.files)
    # held-out rows: the served model is accurate on frames it never saw
    rmse = depth3d.rmse_per_axis(served, y[n:])
    assert np.all(rmse[:2] < 0.25 * y[n:, :2].std(axis=0))


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="mask area must be > 0"):
        depth3d.check_inputs(np.array([[0.0, 1.0, 2.0]]))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        depth3d.check_inputs(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="too few"):
        depth3d.fit(np.ones((5, 3)), np.zeros((5, 3)))
