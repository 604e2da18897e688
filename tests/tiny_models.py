"""A small but real Keras network for serving tests: uint8 image in, named outputs, metadata attached."""

from __future__ import annotations

from pathlib import Path

from sipec.serving.repository import ModelRepository, ModelVersion

CLASS_NAMES = ["alpha", "beta", "gamma"]


def build_classifier(seed: int, size: int = 16):
    import keras

    keras.utils.set_random_seed(seed)
    image = keras.Input((size, size, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0)(keras.ops.cast(image, "float32"))
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    features = keras.layers.GlobalAveragePooling2D(name="features")(x)
    probs = keras.layers.Dense(len(CLASS_NAMES), activation="softmax", name="probs")(features)
    return keras.Model(image, {"probs": probs, "features": features})


def export_classifier(repo: Path, name: str = "tiny", seed: int = 0, version: int | None = None,
                      size: int = 16) -> tuple[object, ModelVersion]:
    model = build_classifier(seed, size)
    mv = ModelRepository(repo).export(model, name, {
        "module": "test", "architecture": "tiny-cnn", "class_names": CLASS_NAMES,
        "input": {"height": size, "width": size, "channels": 3}, "training": {"seed": seed}}, version=version)
    return model, mv


POSE_NAMES = ["snout", "left_ear", "right_ear", "tail_base"]


def export_tiny_posenet(repo: Path, name: str = "posenet", size: int = 64, seed: int = 0) -> ModelVersion:
    """A small PoseNet with random weights (the service tests' model): `size` px input, POSE_NAMES keypoints."""
    import keras

    from services.posenet.model import build_posenet, export_posenet

    keras.utils.set_random_seed(seed)
    model = build_posenet(len(POSE_NAMES), size, "small", small_width=8)
    return export_posenet(model, repo, name, {"module": "posenet", "architecture": "simple-baselines/small",
                                              "input": {"height": size, "width": size, "channels": 3},
                                              "keypoint_names": POSE_NAMES})
