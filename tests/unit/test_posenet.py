"""PoseNet pieces: targets, masked loss, peak refinement, augmentation, readers, training, export, outputs."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest

from services.posenet.crops import Augment, apply_matrix, make_crop
from services.posenet.peaks import decode_heatmaps
from services.posenet.split import split_samples
from services.posenet.targets import MISSING, heatmap_targets


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    subprocess.run([sys.executable, "-m", "sipec", "synth", "--out", str(out), "--animals", "2", "--frames", "24",
                    "--seed", "3", "--size", "256x192"], check=True, capture_output=True)
    return out


def test_targets_gaussian_peak_at_keypoint_and_missing_marked():
    kp = np.array([[41.0, 21.0], [np.nan, np.nan], [10.0, 50.0]])
    t = heatmap_targets(kp, size=64, stride=4, sigma=1.5)
    assert t.shape == (16, 16, 3)
    # keypoint (41, 21) in crop pixels is cell ((41 + .5) / 4 - .5, ...) = (9.875, 4.875): the max is at (10, 5)
    j, i = np.unravel_index(t[:, :, 0].argmax(), (16, 16))
    assert (i, j) == (10, 5)
    assert t[:, :, 0].max() == pytest.approx(np.exp(-(0.125 ** 2 * 2) / (2 * 1.5 ** 2)), rel=1e-5)
    assert np.all(t[:, :, 1] == MISSING)
    assert t[:, :, 2].min() >= 0.0


def test_decode_recovers_off_grid_peak():
    target = heatmap_targets(np.array([[37.3, 18.9], [5.6, 50.2]]), size=64, stride=4, sigma=2.0)
    kp = decode_heatmaps(target[None], stride=4)
    assert kp.shape == (1, 2, 3)
    np.testing.assert_allclose(kp[0, :, :2], [[37.3, 18.9], [5.6, 50.2]], atol=0.05)
    assert np.all(kp[0, :, 2] > 0.9)
    # without refinement the error would be up to 2 px: check the refinement is what makes it precise
    assert np.abs(kp[0, 0, :2] - [37.3, 18.9]).max() < 0.05


def test_masked_loss_ignores_missing_keypoints():
    import tensorflow as tf

    from services.posenet.model import masked_heatmap_loss

    rng = np.random.default_rng(0)
    kp = np.array([[20.0, 30.0], [np.nan, np.nan]])
    y_true = tf.constant(heatmap_targets(kp, 64, 4)[None])
    pred = tf.Variable(rng.normal(size=(1, 16, 16, 2)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = masked_heatmap_loss(y_true, pred)
    grad = tape.gradient(loss, pred).numpy()
    assert np.all(grad[..., 1] == 0.0)
    assert np.abs(grad[..., 0]).sum() > 0
    expected = np.mean((pred.numpy()[..., 0] - y_true.numpy()[..., 0]) ** 2)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # changing the prediction of the missing keypoint does not change the loss
    pred2 = pred.numpy().copy()
    pred2[..., 1] += 5.0
    assert float(masked_heatmap_loss(y_true, tf.constant(pred2))) == pytest.approx(float(loss), rel=1e-6)


def test_augmentation_moves_keypoints_with_image():
    image = np.zeros((200, 300, 3), dtype=np.uint8)
    kp = np.array([[150.0, 90.0], [120.0, 120.0]])
    import cv2

    cv2.circle(image, (150, 90), 2, (255, 255, 255), -1)
    rng = np.random.default_rng(5)
    for _ in range(10):
        crop, kp_crop, m = make_crop(image, kp, np.array([140.0, 100.0]), 80.0, 64,
                                     Augment(brightness=0, contrast=0), rng)
        np.testing.assert_allclose(kp_crop, apply_matrix(m, kp))
        if not (0 <= kp_crop[0, 0] < 64 and 0 <= kp_crop[0, 1] < 64):
            continue
        grey = crop[..., 0].astype(float)
        ys, xs = np.nonzero(grey > 0.5 * grey.max())
        w = grey[ys, xs]
        centroid = np.array([np.sum(xs * w), np.sum(ys * w)]) / w.sum()
        assert np.linalg.norm(centroid - kp_crop[0]) < 1.0


def test_split_by_image_random_last_and_folds(synth_dir):
    from services.posenet.data import load_samples

    data = load_samples(synth_dir)
    tr, te = split_samples(data.samples, 0.25, seed=1)
    assert not {data.samples[i].source for i in tr} & {data.samples[i].source for i in te}
    assert len(tr) + len(te) == len(data.samples)
    tr_last, te_last = split_samples(data.samples, 0.25, seed=0, mode="last")
    assert min(te_last) > max(tr_last)
    folds = [set(split_samples(data.samples, 0, 0, f"fold:{i}/3")[1]) for i in range(3)]
    assert set().union(*folds) == set(range(len(data.samples)))
    with pytest.raises(ValueError, match="fold"):
        split_samples(data.samples, 0, 0, "fold:3/3")


def test_readers_slp_dlc_coco_agree_on_synth(synth_dir):
    from services.posenet.data import load_samples

    slp = load_samples(synth_dir / "keypoints.slp")
    dlc = load_samples(synth_dir / "keypoints_dlc.csv") if (synth_dir / "labeled-data").exists() else None
    coco = load_samples(synth_dir / "annotations.json")
    assert slp.format == "sleap" and coco.format == "coco"
    assert slp.keypoint_names == coco.keypoint_names == ["snout", "left_ear", "right_ear", "neck", "body_center",
                                                          "tail_base", "tail_mid", "tail_tip"]
    assert len(slp.samples) > 0 and len(coco.samples) > 0
    s = slp.samples[0]
    assert s.patch.dtype == np.uint8 and s.patch.ndim == 3 and s.keypoints.shape == (8, 2)
    assert dlc is None or dlc.keypoint_names == slp.keypoint_names


def test_dlc_reader_real_data_with_missing_labels(shared_data):
    from services.posenet.data import load_samples

    of = load_samples(shared_data / "dlc-openfield-mouse")
    assert of.keypoint_names == ["snout", "leftear", "rightear", "tailbase"] and len(of.samples) == 116
    h5 = load_samples(next((shared_data / "dlc-openfield-mouse" / "labeled-data").glob("*/CollectedData_*.h5")))
    np.testing.assert_allclose(h5.samples[3].keypoints, of.samples[3].keypoints)
    reach = load_samples(shared_data / "dlc-reaching-mouse")
    kps = np.stack([s.keypoints for s in reach.samples])
    assert np.isnan(kps).any() and np.isfinite(kps).any()


def _args(**kw) -> argparse.Namespace:
    base = dict(input_size=64, backbone="small", width=8, batch_size=4, sigma=2.0, lr=2e-3, epochs=3, seed=0,
                no_augment=True)
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture(scope="module")
def trained(synth_dir):
    from services.posenet.data import load_samples
    from services.posenet.train import train_model

    data = load_samples(synth_dir / "keypoints.slp")
    model, history = train_model(data, list(range(min(16, len(data.samples)))), _args(), None)
    return data, model, history


def test_short_training_lowers_loss(trained):
    _, _, history = trained
    loss = history.history["loss"]
    assert loss[-1] < loss[0]


def test_model_shapes_and_backbones():
    from services.posenet.model import build_posenet

    m = build_posenet(5, 64, "small", small_width=8)
    out = m(np.zeros((2, 64, 64, 3), np.uint8))["heatmaps"]
    assert tuple(out.shape) == (2, 16, 16, 5)
    big = build_posenet(3, 64, "resnet50")          # the paper's backbone, random init (no download)
    assert tuple(big.outputs[0].shape) == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="imagenet"):
        build_posenet(3, 64, "small", weights="imagenet")


def test_export_and_local_backend(trained, tmp_path):
    from services.posenet.model import export_posenet
    from services.posenet.predict import estimate_crops
    from sipec.serving.backends import LocalBackend

    data, model, _ = trained
    meta = {"module": "posenet", "architecture": "simple-baselines/small",
            "input": {"height": 64, "width": 64, "channels": 3}, "keypoint_names": data.keypoint_names}
    mv = export_posenet(model, tmp_path, "posenet", meta)
    backend = LocalBackend(tmp_path, "posenet")
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    kp, version = estimate_crops(backend, crops)
    assert kp.shape == (3, 8, 3) and version == mv.version
    ref = model(crops, training=False)["heatmaps"].numpy()
    np.testing.assert_allclose(kp, decode_heatmaps(ref, 4), atol=1e-3)
    assert backend.metadata().info["keypoint_names"] == data.keypoint_names
    backend.close()


def test_outputs_readable_by_pandas_and_sleap_io(tmp_path):
    import pandas as pd
    import sleap_io as sio

    from services.posenet.outputs import write_dlc, write_predictions_slp

    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 100, (3, 2, 4, 2)), rng.uniform(0, 1, (3, 2, 4, 1))], axis=-1)
    names = ["a", "b", "c", "d"]
    write_dlc(tmp_path / "p.h5", kp, names, ["i0", "i1", "i2"], ["f", "m"])
    df = pd.read_hdf(tmp_path / "p.h5")
    assert list(df.columns.names) == ["scorer", "individuals", "bodyparts", "coords"]
    np.testing.assert_allclose(df[("sipec-posenet", "m", "c", "likelihood")].to_numpy(), kp[:, 1, 2, 2])
    write_dlc(tmp_path / "p.csv", kp[:, :1], names, ["i0", "i1", "i2"])
    back = pd.read_csv(tmp_path / "p.csv", header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(back[("sipec-posenet", "b", "x")].to_numpy(), kp[:, 0, 1, 0], rtol=1e-6)
    write_predictions_slp(tmp_path / "p.slp", kp, [0, 5, 9], names, ["f", "m"], "video.mp4", (100, 100))
    labels = sio.load_slp(str(tmp_path / "p.slp"), open_videos=False)
    assert [lf.frame_idx for lf in labels.labeled_frames] == [0, 5, 9]
    inst = labels.labeled_frames[1].instances[1]
    np.testing.assert_allclose(inst.numpy(), kp[1, 1, :, :2], rtol=1e-5)
    # sleap-io 0.9.5's NWB writer indexes timestamps by row: it needs frames 0..F-1 (see outputs.py)
    write_predictions_slp(tmp_path / "p.nwb", kp, [0, 1, 2], names, ["f", "m"], "video.mp4", (100, 100))
    nwb = sio.load_nwb(str(tmp_path / "p.nwb"))
    assert len(nwb.labeled_frames) == 3 and [n.name for n in nwb.skeletons[0].nodes] == names
