"""PoseNet pieces: targets, masked loss, peak refinement, augmentation, readers, training, export, outputs."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

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


def test_cross_entropy_loss_ignores_missing_keypoints_and_is_least_at_the_target():
    """--loss bce (the paper's): pixel-wise binary cross-entropy of sigmoid heatmaps against the Gaussian targets."""
    import tensorflow as tf

    from services.posenet.model import heatmap_loss, masked_heatmap_bce

    kp = np.array([[20.0, 30.0], [np.nan, np.nan]])
    target = heatmap_targets(kp, 64, 4)[None]
    y_true = tf.constant(target)
    pred = tf.Variable(np.full((1, 16, 16, 2), 0.3, np.float32))
    with tf.GradientTape() as tape:
        loss = masked_heatmap_bce(y_true, pred)
    grad = tape.gradient(loss, pred).numpy()
    assert np.all(grad[..., 1] == 0.0) and np.abs(grad[..., 0]).sum() > 0
    t, p = target[..., 0], 0.3
    assert float(loss) == pytest.approx(float(np.mean(-(t * np.log(p) + (1 - t) * np.log(1 - p)))), rel=1e-5)
    at_target = np.where(target >= 0, target, 0.5).astype(np.float32)
    assert float(masked_heatmap_bce(y_true, tf.constant(at_target))) < float(loss)
    assert heatmap_loss(0.0, "bce") is not heatmap_loss(0.0, "mse")
    with pytest.raises(ValueError, match="mse, bce"):
        heatmap_loss(0.0, "l1")


def test_left_right_pairs_from_names():
    from services.posenet.crops import left_right_pairs

    assert left_right_pairs(["snout", "leftear", "rightear", "tailbase"]) == [(1, 2)]
    assert left_right_pairs(["snout", "left_ear", "right_ear", "tail_base"]) == [(1, 2)]
    assert left_right_pairs(["head", "wingL", "wingR", "forelegL4", "forelegR4", "eyeL", "eyeR"]) == [
        (1, 2), (3, 4), (5, 6)]
    assert left_right_pairs(["LeftEar", "RightEar", "ear_left", "ear_right"]) == [(0, 1), (2, 3)]
    assert left_right_pairs(["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]) == []


def test_mirror_augmentation_swaps_left_and_right_with_the_image():
    """Red dot = left ear, green dot = right ear. After a mirror the animal's left ear is the old right one:
    keypoint row 'left' must sit on the green dot."""
    import cv2

    image = np.zeros((200, 300, 3), dtype=np.uint8)
    kp = np.array([[150.0, 80.0], [130.0, 100.0], [170.0, 100.0]])   # snout, left ear, right ear
    cv2.circle(image, (130, 100), 2, (255, 0, 0), -1)
    cv2.circle(image, (170, 100), 2, (0, 255, 0), -1)
    aug = Augment(rotation_deg=20, brightness=0, contrast=0, flip_pairs=((1, 2),))
    rng = np.random.default_rng(1)
    mirrored = 0
    for _ in range(12):
        crop, kp_crop, m = make_crop(image, kp, np.array([150.0, 100.0]), 90.0, 64, aug, rng)
        is_mirror = np.linalg.det(m[:, :2]) < 0
        mirrored += is_mirror
        ears = apply_matrix(m, kp)[1:]
        np.testing.assert_allclose(kp_crop[1:], ears[::-1] if is_mirror else ears)
        # channel that must dominate at keypoint `row`: red (0) at the left ear, green (1) at the right one,
        # exchanged in a mirror image
        for row, colour in ((1, int(is_mirror)), (2, 1 - int(is_mirror))):
            x, y = np.round(kp_crop[row]).astype(int)
            px = crop[y - 1:y + 2, x - 1:x + 2].reshape(-1, 3).max(axis=0)
            assert px[colour] > 100 and px[1 - colour] < 60
    assert 0 < mirrored < 12


def test_patch_is_large_enough_for_the_augmentation():
    from services.posenet.crops import patch_margin

    assert patch_margin(None) < 1.1
    assert patch_margin(Augment(rotation_deg=30)) > np.exp(0.2) * (np.cos(np.pi / 6) + np.sin(np.pi / 6))
    assert 1.9 < patch_margin(Augment(rotation_deg=180)) <= 2.0


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


def test_block_subset_and_file_splits(synth_dir, tmp_path):
    """block:i/n: contiguous frames, every image tested once; subset:N: N training images, nested, tested on the
    last fraction; file: the listed test images."""
    from services.posenet.data import load_labels

    animals = load_labels(synth_dir).animals
    sources = list(dict.fromkeys(a.source for a in animals))
    position = {s: i for i, s in enumerate(sources)}
    tested = []
    for i in range(4):
        tr, te = split_samples(animals, 0, 0, f"block:{i}/4")
        frames = sorted({position[animals[j].source] for j in te})
        assert frames == list(range(frames[0], frames[-1] + 1))
        assert not {animals[j].source for j in tr} & {animals[j].source for j in te}
        tested += frames
    assert sorted(tested) == list(range(len(sources)))
    small_tr, small_te = split_samples(animals, 0.25, 1, "subset:3")
    big_tr, big_te = split_samples(animals, 0.25, 1, "subset:10")
    assert small_te == big_te and {position[animals[j].source] for j in big_te} == set(range(18, 24))
    assert len({animals[j].source for j in small_tr}) == 3 and set(small_tr) <= set(big_tr)
    with pytest.raises(ValueError, match="between 1 and the 18"):
        split_samples(animals, 0.25, 1, "subset:30")
    split_file = tmp_path / "split.json"
    # relative to the project: synth frames are video.mp4#INDEX, matched by path suffix
    split_file.write_text(json.dumps({"test_images": [Path(sources[5]).name, Path(sources[7]).name]}))
    tr, te = split_samples(animals, 0, 0, f"file:{split_file}")
    assert {animals[j].source for j in te} == {sources[5], sources[7]}
    split_file.write_text(json.dumps({"test_images": ["nowhere.png"]}))
    with pytest.raises(ValueError, match="nowhere.png"):
        split_samples(animals, 0, 0, f"file:{split_file}")


def test_crop_centres_from_box_mask_and_keypoints_on_synth(synth_dir):
    from services.posenet.data import CropSpec, auto_side, cut_samples, load_labels
    from sipec.geometry import center_of_mass, decode_rle

    labels = load_labels(synth_dir)
    assert labels.format == "coco" and labels.has_masks
    side = auto_side(labels.animals)
    assert side % 8 == 0 and side >= 1.25 * np.median([a.size() for a in labels.animals])
    idx = [0, 1, 2]
    by_box = cut_samples(labels, CropSpec("box", side), idx)
    by_mask = cut_samples(labels, CropSpec("mask", side), idx)
    by_kp = cut_samples(labels, CropSpec("keypoints", side), idx)
    for i, b, m, k in zip(idx, by_box, by_mask, by_kp, strict=True):
        a = labels.animals[i]
        np.testing.assert_allclose(b.center, [(a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2])
        np.testing.assert_allclose(m.center, np.array(center_of_mass(decode_rle(a.rle))) - 0.5)
        ok = np.isfinite(a.keypoints).all(axis=1)
        np.testing.assert_allclose(k.center, (a.keypoints[ok].min(0) + a.keypoints[ok].max(0)) / 2)
        assert b.side == m.side == k.side == side
        # the patch is the frame around the crop: its pixels are the frame's
        assert b.patch.shape[0] <= 1.6 * side + 2 and b.source == a.source
    frame = cut_samples(labels, CropSpec("frame"), [0])[0]
    assert frame.side == 256 and frame.patch.shape == (192, 256, 3)


def test_mask_centres_need_masks(shared_data):
    from services.posenet.data import CropSpec, DataError, cut_samples, load_labels

    labels = load_labels(shared_data / "dlc-openfield-mouse")
    with pytest.raises(DataError, match="--crop-center mask needs masks"):
        cut_samples(labels, CropSpec("mask", 160), [0])


def test_flies_clip_crops_on_derived_masks(shared_data):
    from services.posenet.data import CropSpec, cut_samples, load_labels

    labels = load_labels(shared_data / "sleap-flies-clip")
    assert labels.format.startswith("sleap-flies-clip") and len(labels.keypoint_names) == 13
    assert {a.individual for a in labels.animals[:2]} == {"female", "male"}
    samples = cut_samples(labels, CropSpec("mask", 144), [0, 1, 2998, 2999])
    for s in samples:
        ok = np.isfinite(s.keypoints).all(axis=1)
        centre = (s.keypoints[ok].min(0) + s.keypoints[ok].max(0)) / 2
        assert np.linalg.norm(s.center - centre) < 25     # the derived mask's COM lies on the labelled fly
        assert np.all(np.abs(s.keypoints[ok] - s.center) < 72)


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


def test_multi_animal_dlc_csv_and_h5_give_one_animal_per_individual(tmp_path):
    """A maDLC project: CollectedData CSV (sipec.data.dlc writer) and the same table as DLC's pandas H5."""
    import cv2

    from services.posenet.data import load_labels
    from sipec.data.dlc import DlcLabels, write_dlc_csv
    from sipec.data.pose_outputs import dlc_dataframe

    folder = tmp_path / "labeled-data" / "session"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = [f"labeled-data/session/img{i}.png" for i in range(3)]
    for p in paths:
        cv2.imwrite(str(tmp_path / p), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    coords = rng.uniform(5, 55, (3, 2, 3, 2))
    coords[1, 1] = np.nan                      # individual "b" not labelled in image 1
    coords[2, 0, 2] = np.nan                   # one missing point
    write_dlc_csv(folder / "CollectedData_me.csv", DlcLabels("me", ["nose", "leftear", "rightear"], ["a", "b"],
                                                             paths, coords))
    csv = load_labels(tmp_path)
    assert csv.keypoint_names == ["nose", "leftear", "rightear"]
    assert [(a.source.rsplit("/", 1)[1], a.individual) for a in csv.animals] == [
        ("img0.png", "a"), ("img0.png", "b"), ("img1.png", "a"), ("img2.png", "a"), ("img2.png", "b")]
    np.testing.assert_allclose(csv.animals[3].keypoints, coords[2, 0], atol=1e-3)
    (folder / "CollectedData_me.csv").unlink()
    xy = np.concatenate([coords, np.ones((3, 2, 3, 1))], axis=-1)
    df = dlc_dataframe(xy, ["nose", "leftear", "rightear"], paths, ["a", "b"], scorer="me")
    df = df.drop(columns="likelihood", level="coords")
    df.to_hdf(folder / "CollectedData_me.h5", key="df_with_missing", mode="w")
    h5 = load_labels(tmp_path)
    assert [a.individual for a in h5.animals] == [a.individual for a in csv.animals]
    for a, b in zip(h5.animals, csv.animals, strict=True):
        np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-3)


def test_the_input_size_follows_the_crop_and_the_keypoint_spacing(shared_data):
    from services.posenet.data import LabelledAnimal, auto_input_size, auto_side, keypoint_spacing, load_labels

    def animal(spacing: float) -> LabelledAnimal:
        return LabelledAnimal("x", np.array([[0.0, 0.0], [spacing, 0.0], [0.0, 300.0]]))

    # far-apart keypoints on a large crop: downsampled only as far as 4 heatmap cells (16 px) between the closest
    assert auto_input_size([animal(40.0)] * 5, 400.0, 4)[0] == 160      # 400 px x 16 / 40
    assert auto_input_size([animal(4.0)], 400.0, 4)[0] == 256        # close keypoints: as fine as allowed
    assert auto_input_size([animal(4.0)], 60.0, 4)[0] == 128         # a small crop: never below 128
    assert keypoint_spacing([LabelledAnimal("x", np.full((3, 2), np.nan))]) == 0.0
    # the shared projects: openfield at its crop's own resolution (was 128 for 160 px), reaching 256 (was 128 for 528)
    for name, side, size in (("dlc-openfield-mouse", 160, 160), ("dlc-reaching-mouse", 528, 256)):
        labels = load_labels(shared_data / name)
        assert auto_side(labels.animals) == side
        got, why = auto_input_size(labels.animals, side, 4)
        assert got == size and f"crop {side} px" in why and "closest keypoints" in why


def test_lightning_pose_layout_collected_data_at_the_root_without_a_scorer(tmp_path):
    """Lightning Pose keeps one CollectedData.csv (no _scorer suffix) at the project root, image paths relative to
    it; DeepLabCut's layout beside it keeps working, and a folder without labels names what was looked for."""
    import cv2

    from services.posenet.data import DataError, load_labels
    from sipec.data.dlc import DlcLabels, write_dlc_csv

    rng = np.random.default_rng(1)
    paths = [f"labeled-data/vid{v}/img{i:03d}.png" for v in range(2) for i in range(2)]
    for p in paths:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / p), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    coords = rng.uniform(5, 55, (4, 1, 2, 2))
    write_dlc_csv(tmp_path / "CollectedData.csv", DlcLabels("lp", ["nose", "tail"], None, paths, coords))
    labels = load_labels(tmp_path)
    assert labels.format == "deeplabcut" and labels.keypoint_names == ["nose", "tail"]
    assert [a.source for a in labels.animals] == [str(tmp_path / p) for p in paths]
    np.testing.assert_allclose(labels.animals[2].keypoints, coords[2, 0], atol=1e-3)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no DeepLabCut labels found"):
        load_labels(empty)


def _args(**kw) -> argparse.Namespace:
    base = dict(input_size=64, backbone="small", width=8, batch_size=4, sigma=2.0, lr=2e-3, epochs=3, seed=0,
                no_augment=True, fg_weight=0.0, loss="mse", stride="16")
    base.update(kw)
    return argparse.Namespace(**base)


@pytest.fixture(scope="module")
def trained(shared_data):
    """The DeepLabCut reader feeding a short training: the reaching mouse, whose labels miss ~15% of points
    (Tongue in most images), whole frames (two image sizes) as crops."""
    from services.posenet.data import CropSpec, cut_samples, load_labels
    from services.posenet.train import train_model

    labels = load_labels(shared_data / "dlc-reaching-mouse")
    samples = cut_samples(labels, CropSpec("frame"), list(range(16)))
    model, history = train_model(len(labels.keypoint_names), samples, _args(), None, None)
    return labels, model, history, samples


def test_short_training_on_dlc_data_with_missing_labels_lowers_loss(trained):
    _, _, history, samples = trained
    kps = np.stack([s.keypoints for s in samples])
    assert np.isnan(kps).any(), "the training set must contain missing labels"
    assert len({s.frame_size for s in samples}) == 2, "both image sizes of the reaching mouse"
    loss = history.history["loss"]
    assert np.all(np.isfinite(loss))


def test_short_training_lowers_the_loss_in_every_epoch_after_the_first(trained):
    """Every later epoch's loss well below the first's (the optimiser learns), not one noisy pair of epoch losses.
    (Measured in inference mode instead, 3 to 25 epochs on these 16 images do not beat the untrained network: the
    batch-norm moving statistics lag behind such short trainings.)"""
    loss = trained[2].history["loss"]
    assert len(loss) == 3
    assert max(loss[1:]) < 0.6 * loss[0], loss


def test_model_shapes_and_backbones():
    from services.posenet.model import build_posenet

    m = build_posenet(5, 64, "small", small_width=8)
    out = m(np.zeros((2, 64, 64, 3), np.uint8))["heatmaps"]
    assert tuple(out.shape) == (2, 16, 16, 5)
    deep = build_posenet(5, 64, "small", small_width=8, small_stride=32)   # a fifth stage, a third deconvolution
    assert tuple(deep.outputs[0].shape) == (None, 16, 16, 5) and deep.count_params() > m.count_params()
    assert "stage5_c1" in {layer.name for layer in deep.layers} and "deconv3" in {layer.name for layer in deep.layers}
    with pytest.raises(ValueError, match="stride"):
        build_posenet(5, 64, "small", small_stride=8)
    big = build_posenet(3, 64, "resnet50")          # the paper's backbone, random init (no download)
    assert tuple(big.outputs[0].shape) == (None, 16, 16, 3)
    with pytest.raises(ValueError, match="imagenet"):
        build_posenet(3, 64, "small", weights="imagenet")


def test_weights_file_initialises_the_same_architecture(tmp_path):
    from services.posenet.model import build_posenet

    a = build_posenet(3, 64, "small", small_width=8)
    a.save_weights(tmp_path / "pose.weights.h5")
    b = build_posenet(3, 64, "small", weights=str(tmp_path / "pose.weights.h5"), small_width=8)
    x = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(a(x)["heatmaps"].numpy(), b(x)["heatmaps"].numpy(), rtol=1e-5, atol=1e-6)


def test_foreground_weight_counts_keypoint_pixels_more():
    from services.posenet.model import masked_heatmap_loss

    y_true = heatmap_targets(np.array([[30.0, 30.0]]), 64, 4)[None]
    zeros = np.zeros_like(y_true)
    plain = float(masked_heatmap_loss(y_true, zeros))
    weighted = float(masked_heatmap_loss(y_true, zeros, fg_weight=10.0))
    t = y_true[..., 0]
    assert plain == pytest.approx(np.mean(t ** 2), rel=1e-5)
    assert weighted == pytest.approx(np.mean(t ** 2 * (1 + 10 * t)), rel=1e-5)


def test_export_and_local_backend(trained, tmp_path):
    from services.posenet.model import export_posenet
    from services.posenet.predict import estimate_crops
    from sipec.serving.backends import LocalBackend

    data, model, _, _ = trained
    meta = {"module": "posenet", "architecture": "simple-baselines/small",
            "input": {"height": 64, "width": 64, "channels": 3}, "keypoint_names": data.keypoint_names}
    mv = export_posenet(model, tmp_path, "posenet", meta)
    backend = LocalBackend(tmp_path, "posenet")
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    kp, version = estimate_crops(backend, crops)
    assert kp.shape == (3, 5, 3) and version == mv.version
    ref = model(crops, training=False)["heatmaps"].numpy()
    np.testing.assert_allclose(kp, decode_heatmaps(ref, 4), atol=1e-3)
    assert backend.metadata().info["keypoint_names"] == data.keypoint_names
    backend.close()


def test_outputs_readable_by_pandas_and_sleap_io(tmp_path):
    import pandas as pd
    import sleap_io as sio

    from sipec.data.pose_outputs import write_dlc, write_predictions_slp

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
    # NWB (ndx-pose through sleap-io): one series per track and keypoint, stamped frame / fps. Frames that do not
    # start at 0 (sleap-io's default timestamps made main raise IndexError there), given out of order.
    nwb_series = _nwb_series_reader()
    write_predictions_slp(tmp_path / "p.nwb", kp[[2, 0, 1]], [9, 3, 5], names, ["f", "m"], "video.mp4", (100, 100),
                          fps=25.0)
    nwb = sio.load_nwb(str(tmp_path / "p.nwb"))
    assert len(nwb.labeled_frames) == 3 and [n.name for n in nwb.skeletons[0].nodes] == names
    np.testing.assert_allclose(nwb.labeled_frames[1].instances[1].numpy(), kp[1, 1, :, :2], rtol=1e-5)  # frame 5
    t, conf = nwb_series(tmp_path / "p.nwb", "f", "c")
    np.testing.assert_allclose(t, [3 / 25, 0.2, 0.36])
    np.testing.assert_allclose(conf, kp[:, 0, 2, 2], rtol=1e-5)                    # in time order
    # evenly spaced frames: sleap-io stores a rate, which it truncates to an integer (29.97 -> 29, and 1/(1/30)
    # often -> 29); the writer corrects it, so the times stay frame / fps
    for fps in (30.0, 29.97):
        write_predictions_slp(tmp_path / "e.nwb", kp, [31, 32, 33], names, ["f", "m"], "video.mp4", fps=fps)
        t, _ = nwb_series(tmp_path / "e.nwb", "m", "a")
        np.testing.assert_allclose(t, np.array([31, 32, 33]) / fps, rtol=1e-9)


def _nwb_series_reader():
    import pynwb

    def series(path, track: str, node: str) -> tuple[np.ndarray, np.ndarray]:
        """(timestamps in seconds, confidence) of one PoseEstimationSeries, whether stored as times or a rate."""
        with pynwb.NWBHDF5IO(str(path), "r") as io:
            module = next(iter(io.read().processing.values()))
            s = module.data_interfaces[f"track={track}"].pose_estimation_series[node]
            if s.timestamps is not None:
                t = np.asarray(s.timestamps[:])
            else:
                t = s.starting_time + np.arange(s.data.shape[0]) / s.rate
            return t, np.asarray(s.confidence[:])

    return series


def test_service_refuses_a_model_whose_heatmaps_do_not_match_its_keypoint_names():
    """Metadata naming 3 keypoints on a 4-heatmap network: FAILED_PRECONDITION, not silently misnamed points."""
    from services.posenet.service import PoseNetServicer
    from sipec.api.convert import image_to_proto
    from sipec.serving.backends import ModelBackend, ModelMetadata, Prediction
    from sipec.serving.errors import FailedPrecondition
    from sipec.v1 import posenet_pb2

    class FourHeatmaps(ModelBackend):
        def __init__(self, names: list[str]) -> None:
            super().__init__("posenet")
            self.names = names

        def predict(self, inputs, output_filter=None, signature=None):
            hm = np.zeros((len(inputs["crop"]), 16, 16, 4), dtype=np.float32)
            hm[:, 5, 7, :] = 1.0
            return Prediction({"heatmaps": hm}, 1)

        def metadata(self):
            return ModelMetadata("posenet", 1, {}, {}, {"keypoint_names": self.names, "input": {"height": 64}})

        def ready(self):
            return True

    crop = np.zeros((64, 64, 3), dtype=np.uint8)
    request = posenet_pb2.PoseRequest()
    request.crops.add(crop=image_to_proto(crop, "raw"), key="a")
    with pytest.raises(FailedPrecondition, match="outputs 4 heatmaps but its metadata names 3"):
        PoseNetServicer(FourHeatmaps(["a", "b", "c"]))._answer(request, strict=True)
    response = PoseNetServicer(FourHeatmaps(["a", "b", "c", "d"]))._answer(request, strict=True)
    assert [k.name for k in response.poses[0].keypoints] == ["a", "b", "c", "d"]
