"""The depth model as a Keras graph, for export as a TensorFlow SavedModel (TF Serving can serve it).

`build_depth3d_model(params)` returns a Keras model with one input ``features`` (N, 3) float32 = mask
area (pixels), centre of mass u, v (pixels) and one output ``position`` (N, 3) float32 = x, y, z. The
`Isomap3D` layer holds the fitted arrays of :class:`~services.tracker.depth3d.Depth3DParams` as
non-trainable float64 weights and computes exactly what :func:`services.tracker.depth3d.predict` computes
(k nearest training points, geodesic distances through them, centred kernel, kernel PCA projection, least
squares), so the served model and the numpy reference agree to float precision.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from services.tracker.depth3d import Depth3DParams

INPUT_NAME = "features"
OUTPUT_NAME = "position"
ARCHITECTURE = "isomap6-ols"


def _layer_class() -> type:
    import keras
    from keras import ops

    class Isomap3D(keras.layers.Layer):
        """area, u, v -> x, y, z with a fitted Isomap embedding and least squares (weights not trainable)."""

        def __init__(self, params: Depth3DParams, **kwargs: Any) -> None:
            super().__init__(dtype="float64", trainable=False, **kwargs)
            self.k = int(params.n_neighbors)
            self._params = params

        def build(self, input_shape: Any) -> None:
            for f in fields(Depth3DParams):
                if f.name == "n_neighbors":
                    continue
                value = getattr(self._params, f.name)
                w = self.add_weight(name=f.name, shape=value.shape, dtype="float64", trainable=False,
                                    initializer="zeros")
                w.assign(value.astype("float64"))
                setattr(self, f"w_{f.name}", w)

        def call(self, x: Any) -> Any:
            x = ops.cast(x, "float64")
            z = (x - self.w_input_mean) / self.w_input_std
            a, u, v = z[:, 0], z[:, 1], z[:, 2]
            feats = ops.stack([a, u, v, a * u, a * v, u * v], axis=1)
            feats = (feats - self.w_feature_mean) / self.w_feature_std
            diff = ops.expand_dims(feats, 1) - ops.expand_dims(self.w_fit_points, 0)
            dist = ops.sqrt(ops.maximum(ops.sum(diff * diff, axis=-1), 0.0))        # (N, n)
            neg, idx = ops.top_k(-dist, k=self.k)                                    # k nearest
            geo = ops.take(self.w_geodesic, idx, axis=0) + ops.expand_dims(-neg, -1)  # (N, k, n)
            g = ops.min(geo, axis=1)
            kern = -0.5 * g * g
            kern = kern - self.w_kernel_col_mean - ops.mean(kern, axis=1, keepdims=True) + self.w_kernel_mean
            emb = ops.matmul(kern, self.w_projection)
            area = x[:, 0:1]
            ols_in = ops.concatenate([emb, 1.0 / ops.sqrt(area), area, x[:, 1:3]], axis=1)
            return ops.cast(ops.matmul(ols_in, self.w_ols_coef) + self.w_ols_intercept, "float32")

        def compute_output_shape(self, input_shape: Any) -> tuple:
            return (input_shape[0], 3)

    return Isomap3D


def build_depth3d_model(params: Depth3DParams) -> Any:
    """Keras model: ``features`` (N, 3) float32 area, u, v -> {``position``: (N, 3) float32 x, y, z}."""
    import keras

    inp = keras.Input(shape=(3,), dtype="float32", name=INPUT_NAME)
    out = _layer_class()(params, name="isomap3d")(inp)
    return keras.Model(inp, {OUTPUT_NAME: out}, name="depth3d")
