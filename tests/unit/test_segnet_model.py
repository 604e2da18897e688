"""SegNet's Mask R-CNN: anchors, box coding, RoIAlign, targets, head shapes, NMS, training, export."""

from __future__ import annotations

import time

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from services.segnet.data import SegData, augment, boxes_from_masks  # noqa: E402
from services.segnet.losses import mask_targets, rpn_targets, sample_rois  # noqa: E402
from services.segnet.model import (  # noqa: E402
    MaskRCNNConfig,
    box_iou,
    build_model,
    decode_boxes,
    encode_boxes,
    generate_anchors,
    roi_align,
)
from services.segnet.train import export_model, train_model  # noqa: E402

SIZE = 64


def _config(**kw) -> MaskRCNNConfig:
    return MaskRCNNConfig(image_size=SIZE, anchor_sizes=(8, 16, 32, 64, 128), fpn_channels=16, box_head_dim=32,
                          mask_head_channels=8, rpn_pre_nms=200, rpn_post_nms_train=32, rpn_post_nms_infer=16,
                          rpn_batch=32, roi_batch=16, max_detections=5, max_instances=3, **kw)


def _rect_data(n: int = 8, seed: int = 0) -> SegData:
    """Bright rectangles ("animals") on a dark floor, 1-2 per image."""
    rng = np.random.default_rng(seed)
    images = np.full((n, SIZE, SIZE, 3), 30, np.uint8)
    masks = np.zeros((n, 3, SIZE, SIZE), bool)
    classes = np.zeros((n, 3), np.int32)
    for i in range(n):
        for j in range(1 + i % 2):
            h, w = rng.integers(12, 24, 2)
            y = rng.integers(0 if j == 0 else 34, 10 if j == 0 else SIZE - h)
            x = rng.integers(0, SIZE - w)
            images[i, y:y + h, x:x + w] = 220
            masks[i, j, y:y + h, x:x + w] = True
            classes[i, j] = 1
    return SegData(images, masks, classes, ["animal"], [f"rect#{i}" for i in range(n)])


@pytest.fixture(scope="module")
def trained():
    data = _rect_data()
    result = train_model(data, _config(), epochs=6, batch_size=4, seed=0, augment_data=False, lr=2e-3, log=None)
    return data, result


def test_anchors_cover_every_level_and_ratio():
    c = _config()
    anchors = generate_anchors(c)
    expected = sum((SIZE // s) ** 2 * 3 for s in (4, 8, 16, 32)) + 1 * 3   # P6 of a 64 px image is 1x1
    assert anchors.shape == (expected, 4)
    first = anchors[0] * SIZE    # level P2, centre (2, 2), ratio 0.5 (h/w), size 8
    h, w = first[2] - first[0], first[3] - first[1]
    assert np.isclose(h * w, 64.0) and np.isclose(h / w, 0.5)
    assert np.allclose((first[0] + first[2]) / 2, 2.0)


def test_box_encoding_round_trip():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(0, 0.5, (50, 4)).astype(np.float32)
    anchors[:, 2:] += anchors[:, :2] + 0.05
    boxes = rng.uniform(0, 0.5, (50, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2] + 0.05
    deltas = encode_boxes(tf.constant(boxes), tf.constant(anchors))
    assert np.allclose(decode_boxes(deltas, tf.constant(anchors)).numpy(), boxes, atol=1e-5)
    assert np.allclose(encode_boxes(tf.constant(anchors), tf.constant(anchors)).numpy(), 0.0, atol=1e-6)


def test_roi_align_samples_bin_centres():
    # P2 of a 64 px image is 16x16; f(y, x) = 10 y + x is linear, so bilinear samples are exact
    y, x = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    p2 = tf.constant((10 * y + x)[None, :, :, None], tf.float32)
    zeros = [tf.zeros([1, 16 // 2 ** k, 16 // 2 ** k, 1]) for k in (1, 2, 3)]
    box = tf.constant([[[0.25, 0.25, 0.75, 0.75]]])   # 32x32 px box -> level 2; feature coords 3.5..11.5
    out = roi_align([p2, *zeros], box, pool=2, image_size=SIZE).numpy()[0, 0, :, :, 0]
    # bins of 4 feature pixels: centres at 5.5 and 9.5 in both axes
    assert np.allclose(out, [[60.5, 64.5], [100.5, 104.5]], atol=1e-4)


def test_rpn_targets_label_matching_anchor_positive():
    c = _config()
    anchors = tf.constant(generate_anchors(c))
    gt = tf.constant([[anchors[100].numpy(), [0, 0, 0, 0]]])          # one real box = anchor 100, one padding
    labels, matched, pos = rpn_targets(anchors, gt, tf.constant([[True, False]]), batch=32)
    labels = labels.numpy()[0]
    assert labels[100] == 1.0 and pos.numpy()[0, 100]
    assert np.allclose(matched.numpy()[0, 100], gt.numpy()[0, 0])
    assert (labels == 1).sum() <= 16 and (labels >= 0).sum() <= 32 and (labels == 0).sum() > 0


def test_sample_rois_includes_ground_truth_as_foreground_and_crops_masks():
    gt = tf.constant([[[0.1, 0.1, 0.5, 0.5], [0, 0, 0, 0]]])
    classes = tf.constant([[1, 0]])
    props = tf.constant([[[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.45, 0.5]]])
    s = sample_rois(props, gt, classes, count=8, fg_fraction=0.5)
    fg = s["fg"].numpy()[0]
    assert fg.sum() == 2                        # the close proposal and the ground-truth box itself
    assert set(s["classes"].numpy()[0][fg]) == {1} and set(s["classes"].numpy()[0][~fg]) == {0}
    masks = np.zeros((1, 2, SIZE, SIZE), np.float32)
    masks[0, 0, 6:32, 6:32] = 1
    t = mask_targets(tf.constant(masks), s["rois"], s["match"], 8).numpy()[0]
    box_i = int(np.flatnonzero(np.all(np.isclose(s["rois"].numpy()[0], gt.numpy()[0, 0]), axis=1))[0])
    assert t[box_i].mean() > 0.9


def test_head_shapes_and_nms_in_graph():
    c = _config()
    model = build_model(c)
    images = tf.constant(_rect_data(2).images)
    feats = model.features(images)
    assert [tuple(f.shape[1:3]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    logits, deltas = model.rpn(feats)
    assert logits.shape == (2, len(model.anchors)) and deltas.shape == (2, len(model.anchors), 4)
    rois = model.proposals(logits, deltas, 16)
    assert rois.shape == (2, 16, 4)
    cls, box = model.box_head(feats, rois)
    assert cls.shape == (2, 16, 2) and box.shape == (2, 16, 2, 4)
    assert model.mask_head(feats, rois).shape == (2, 16, 28, 28, 1)
    out = {k: v.numpy() for k, v in model.detect(images).items()}
    assert out["boxes"].shape == (2, 5, 4) and out["masks"].shape == (2, 5, 28, 28)
    assert out["scores"].shape == (2, 5) and out["classes"].shape == (2, 5) and out["num_detections"].shape == (2,)
    for b in range(2):
        n = out["num_detections"][b]
        assert np.all(np.diff(out["scores"][b, :n]) <= 1e-6)          # sorted by score
        boxes = out["boxes"][b, :n][:, [1, 0, 3, 2]] / SIZE
        iou = box_iou(tf.constant(boxes), tf.constant(boxes)).numpy() - np.eye(n)
        assert np.all(iou <= c.detection_nms_iou + 1e-5)              # NMS was applied in the graph


def test_augment_keeps_masks_binary_and_boxes_follow_masks():
    data = _rect_data(4)
    tf.random.set_seed(1)
    images, masks = augment(tf.constant(data.images), tf.constant(data.masks, tf.float32))
    assert images.shape == data.images.shape and images.dtype == tf.uint8
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
    boxes = boxes_from_masks(tf.constant(data.masks, tf.float32)).numpy()
    y, x = np.nonzero(data.masks[0, 0])
    assert np.allclose(boxes[0, 0] * SIZE, [y.min(), x.min(), y.max() + 1, x.max() + 1])
    assert np.all(boxes[0, 2] == 0)                                    # padding instance


def test_training_lowers_the_loss(trained):
    _, result = trained
    loss = result.history["loss"]
    assert len(loss) == 6 and all(np.isfinite(loss))
    assert loss[-1] < loss[0]
    assert set(result.history) == {"rpn_class", "rpn_box", "roi_class", "roi_box", "mask", "loss"}


def test_export_and_local_backend_predict(trained, tmp_path):
    from sipec.serving.backends import LocalBackend

    data, result = trained
    version = export_model(result.model, tmp_path, "segnet", ["animal"], {"test": True})
    assert (version.path / "assets" / "sipec.json").is_file()
    backend = LocalBackend(tmp_path, "segnet", poll_s=0.2)
    try:
        deadline = time.time() + 60
        while not backend.ready() and time.time() < deadline:
            time.sleep(0.1)
        meta = backend.metadata()
        assert meta.info["module"] == "segnet" and meta.info["input"]["height"] == SIZE
        assert meta.inputs["image"].dtype in ("DT_UINT8", "uint8", tf.uint8.as_datatype_enum)
        got = backend.predict({"image": data.images[:3]}).outputs
        want = {k: v.numpy() for k, v in result.model.detect(tf.constant(data.images[:3])).items()}
        assert set(got) == {"boxes", "scores", "classes", "masks", "num_detections"}
        assert np.array_equal(got["num_detections"], want["num_detections"])
        assert np.allclose(got["scores"], want["scores"], atol=1e-4)
        assert np.allclose(got["boxes"], want["boxes"], atol=1e-2)
    finally:
        backend.close()
