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


def export_tiny_segnet(repo: Path, name: str = "segnet", height: int = 64, width: int = 96,
                       seed: int = 0) -> ModelVersion:
    """The real Mask R-CNN graph in a small configuration, untrained (the SegNet service tests' model)."""
    import keras

    from services.segnet.config import MaskRCNNConfig
    from services.segnet.model import build_model
    from services.segnet.train import export_model

    keras.utils.set_random_seed(seed)
    config = MaskRCNNConfig(image_height=height, image_width=width, fpn_channels=16, box_head_units=32,
                            mask_head_convs=1, mask_head_channels=8, anchor_sizes=(8.0, 16.0, 32.0, 64.0, 128.0),
                            pre_nms_test=200, post_nms_test=24, max_detections=6, default_min_score=0.05)
    return export_model(build_model(config), repo, name, {"note": "untrained, for service tests"})


ID_NAMES = ["animal_0", "animal_1"]


def export_tiny_idnet(repo: Path, name: str = "idnet", t: int = 1, size: int = 16, crop_px: int = 32,
                      seed: int = 0) -> ModelVersion:
    """An untrained IdNet (T=`t`, `size` px input, `crop_px` crops) exported as `sipec train idnet` does."""
    import keras

    from services.idnet.export import export_idnet
    from services.idnet.masking import MaskSettings
    from services.idnet.model import NetworkConfig, build_frame_network, build_recurrent_head, build_recurrent_network

    keras.utils.set_random_seed(seed)
    config = NetworkConfig(input_size=size, t=t, num_identities=len(ID_NAMES), gru_units=4)
    _, features = build_frame_network(config)
    head = build_recurrent_head(config, features.output.shape[-1])
    return export_idnet(build_recurrent_network(config, features, head), repo, name, config, ID_NAMES,
                        MaskSettings(input_size=size, crop_px=crop_px))


BEHAVIOURS = ["none", "walking", "rearing"]


def export_tiny_behavenet(repo: Path, name: str = "behavenet", n: int = 1, size: int = 32,
                          seed: int = 0) -> dict[str, ModelVersion]:
    """Untrained BehaveNet (features, frame, temporal models; window 2n+1) exported as `sipec train behavenet`."""
    import keras

    from services.behavenet.crops import CropSettings
    from services.behavenet.model import TemporalConfig, feature_network, frame_classifier, temporal_network
    from services.behavenet.train import TrainedBehaveNet, TrainSettings, export_behavenet
    from services.behavenet.xception import BACKBONES

    keras.utils.set_random_seed(seed)
    settings = TrainSettings(backbone="xception-small", crops=CropSettings(input_size=size, crop_px=2 * size),
                             temporal=TemporalConfig(n=n, filters=8, bottleneck=4))
    features = feature_network(size, BACKBONES["xception-small"])
    frame = frame_classifier(features, len(BEHAVIOURS))
    temporal = temporal_network(int(features.output.shape[-1]), len(BEHAVIOURS), settings.temporal)
    trained = TrainedBehaveNet(features, frame, temporal, BEHAVIOURS, settings, {"frame": {}, "temporal": {}},
                               {"videos": ["x"]}, "run-tiny", 1.0)
    return export_behavenet(trained, repo, name, training={"note": "untrained, for service tests"})


DEPTH_FRAME = (240, 320)   # (height, width) of the frames the tiny depth model was "trained" on


def export_tiny_depth3d(repo: Path, name: str = "depth3d", rows: int = 60, seed: int = 0) -> ModelVersion:
    """A depth3d model fitted on random area/u/v -> x/y/z rows, exported as `sipec train depth3d` does."""
    import numpy as np

    from services.tracker import depth3d
    from services.tracker.model import ARCHITECTURE, INPUT_NAME, OUTPUT_NAME, build_depth3d_model

    rng = np.random.default_rng(seed)
    h, w = DEPTH_FRAME
    area_uv = np.column_stack([rng.uniform(100, 900, rows), rng.uniform(0, w, rows), rng.uniform(0, h, rows)])
    xyz = np.column_stack([area_uv[:, 1] / w, area_uv[:, 2] / h, 1.0 / np.sqrt(area_uv[:, 0])])
    params = depth3d.fit(area_uv, xyz, max_fit=rows, seed=seed)
    return ModelRepository(repo).export(build_depth3d_model(params), name, {
        "module": "tracker", "architecture": ARCHITECTURE, "task": "depth3d",
        "input": {"height": h, "width": w, "channels": 0, "name": INPUT_NAME,
                  "features": list(depth3d.INPUT_NAMES)},
        "outputs": {OUTPUT_NAME: list(depth3d.OUTPUT_NAMES)}, "class_names": [], "training": {"rows": rows}})
