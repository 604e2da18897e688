"""SegNet's Mask R-CNN: anchors, box coding, RoIAlign, targets, head shapes, NMS in the graph, staged
training, a short training that lowers the loss, export and the local backend.

The network is the real one in a small configuration (64x96 input, narrow heads) so that it runs in seconds.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf

from services.segnet.augment import AugmentConfig, augment, boxes_from_masks  # noqa: E402
from services.segnet.boxes import box_iou, decode_boxes, encode_boxes, generate_anchors, level_anchors  # noqa: E402
from services.segnet.config import MaskRCNNConfig, parse_image_size, preset  # noqa: E402
from services.segnet.data import SegData  # noqa: E402
from services.segnet.roi_align import crop_aligned, multilevel_roi_align, roi_levels  # noqa: E402
from services.segnet.targets import mask_targets, rpn_targets, sample_rois  # noqa: E402
from services.segnet.train import export_model, learning_rate, parse_stages, train_model  # noqa: E402

H, W = 64, 96


def tiny_config(**kw) -> MaskRCNNConfig:
    base = dict(image_height=H, image_width=W, fpn_channels=16, box_head_units=32, mask_head_convs=1,
                mask_head_channels=8, anchor_sizes=(8.0, 16.0, 32.0, 64.0, 128.0), rpn_batch_per_image=64,
                pre_nms_train=300, post_nms_train=48, pre_nms_test=200, post_nms_test=24, rois_per_image=16,
                max_detections=5, max_gt_instances=3, default_min_score=0.3)
    base.update(kw)
    return MaskRCNNConfig(**base).validate()


def rect_data(n: int = 8, seed: int = 0) -> SegData:
    """Bright rectangles ("animals") of random size on a dark textured floor, 1-2 per image."""
    rng = np.random.default_rng(seed)
    images = rng.integers(20, 60, (n, H, W, 3)).astype(np.uint8)
    masks = np.zeros((n, 2, H, W), bool)
    classes = np.zeros((n, 2), np.int32)
    for i in range(n):
        for j in range(1 + i % 2):
            h, w = rng.integers(14, 26), rng.integers(14, 30)
            y = rng.integers(0, H - h)
            x = rng.integers(0 if j == 0 else W // 2, W // 2 - w if j == 0 else W - w)
            images[i, y:y + h, x:x + w] = 210
            masks[i, j, y:y + h, x:x + w] = True
            classes[i, j] = 1
    return SegData(images, masks, classes, ["animal"], np.ones(n), np.tile([H, W], (n, 1)))


@pytest.fixture(scope="module")
def trained():
    data = rect_data()
    result = train_model(data, tiny_config(), epochs=30, batch_size=4, seed=0, augment=None, lr=3e-3, log=None)
    return data, result


def test_config_json_round_trip_and_validation():
    c = preset("resnet101", 512, 640)
    assert c.fpn_channels == 256 and c.box_head_units == 1024 and c.mask_head_convs == 4
    assert MaskRCNNConfig.from_json(c.to_json()) == c
    assert c.level_shapes() == [(128, 160), (64, 80), (32, 40), (16, 20), (8, 10)]
    assert parse_image_size("320x256") == (256, 320) and parse_image_size("384") == (384, 384)
    with pytest.raises(ValueError, match="multiple of 32"):
        MaskRCNNConfig(image_height=100).validate()
    with pytest.raises(ValueError, match="backbone"):
        MaskRCNNConfig(backbone="vgg").validate()


def test_anchors_cover_every_level_and_ratio():
    c = tiny_config()
    anchors = generate_anchors(c)
    assert anchors.shape == (sum(h * w * 3 for h, w in c.level_shapes()), 4)
    first = level_anchors(2, 3, 4, 8.0, (0.5, 1.0, 2.0))
    assert first.shape == (18, 4)
    h, w = first[0, 2] - first[0, 0], first[0, 3] - first[0, 1]
    assert h * w == pytest.approx(64.0) and h / w == pytest.approx(0.5)
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert np.allclose(centres[0], [2.0, 2.0]) and np.allclose(centres[3], [2.0, 6.0])   # order: y, x, ratio
    assert np.allclose(centres[9], [6.0, 2.0])


def test_box_encoding_round_trip():
    rng = np.random.default_rng(0)
    anchors = rng.uniform(0, 50, (50, 4)).astype(np.float32)
    anchors[:, 2:] += anchors[:, :2] + 5
    boxes = rng.uniform(0, 50, (50, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2] + 5
    std = (0.1, 0.1, 0.2, 0.2)
    deltas = encode_boxes(boxes, anchors, std)
    assert np.allclose(decode_boxes(deltas, anchors, std).numpy(), boxes, atol=1e-3)
    assert np.allclose(encode_boxes(anchors, anchors, std).numpy(), 0.0, atol=1e-6)
    iou = box_iou(boxes[:3], boxes[:3]).numpy()
    assert np.allclose(np.diag(iou), 1.0)


def test_roi_align_equals_hand_computed_bin_averages():
    # f(y, x) = 10 y + x on a 16x16 map of stride 4; bilinear sampling of a linear function is exact, so
    # each bin is the value at its centre: feature coordinate of image pixel p is p / 4 - 0.5
    y, x = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    feature = tf.constant((10 * y + x)[None, :, :, None], tf.float32)
    box = tf.constant([[16.0, 8.0, 48.0, 40.0]])          # y1, x1, y2, x2 in image pixels
    out = crop_aligned(feature, box, tf.constant([0]), 4, 2, 2).numpy()[0, :, :, 0]
    # feature box y 4..12, x 2..10; bins of 4 feature pixels, centres y 6, 10 and x 4, 8 -> minus 0.5
    want = np.array([[10 * 5.5 + 3.5, 10 * 5.5 + 7.5], [10 * 9.5 + 3.5, 10 * 9.5 + 7.5]])
    assert np.allclose(out, want, atol=1e-4)


def test_multilevel_roi_align_picks_the_fpn_level():
    boxes = tf.constant([[[0, 0, 32, 32], [0, 0, 224, 224], [0, 0, 1000, 1000]]], tf.float32)
    assert roi_levels(boxes, 224.0).numpy().tolist() == [[2, 4, 5]]
    feats = [tf.fill([1, 64 // 2 ** k, 64 // 2 ** k, 2], float(lv)) for k, lv in enumerate((2, 3, 4, 5))]
    small = tf.constant([[[8, 8, 24, 24], [0, 0, 40, 40]]], tf.float32)   # -> P2 and P2/P3
    out = multilevel_roi_align(feats, small, 3, 2, 32.0).numpy()
    assert out.shape == (1, 2, 3, 3, 2)
    lv = roi_levels(small, 32.0).numpy()[0]
    assert np.allclose(out[0, 0], lv[0]) and np.allclose(out[0, 1], lv[1])


def test_rpn_targets_label_and_sample_anchors():
    c = tiny_config()
    anchors = generate_anchors(c)
    gt = np.zeros((1, 2, 4), np.float32)
    gt[0, 0] = anchors[100]                                   # one real box = anchor 100, one padding
    t = rpn_targets(tf.constant(anchors), tf.constant(gt), tf.constant([[1, 0]]), 0.7, 0.3, 32, 0.5, c.box_std)
    labels, weights = t.labels.numpy()[0], t.weights.numpy()[0]
    assert labels[100] == 1 and weights[100] == 1 and t.box_weights.numpy()[0, 100] == 1
    assert np.allclose(t.deltas.numpy()[0, 100], 0.0, atol=1e-5)
    assert labels.sum() <= 16 and weights.sum() == 32 and (labels * weights).sum() == labels.sum()
    empty = rpn_targets(tf.constant(anchors), tf.zeros((1, 2, 4)), tf.zeros((1, 2), tf.int32), 0.7, 0.3, 32, 0.5,
                        c.box_std)
    assert empty.labels.numpy().sum() == 0 and empty.weights.numpy().sum() == 32   # all background


def test_sample_rois_puts_positives_first_and_crops_mask_targets():
    gt = tf.constant([[[10.0, 10.0, 50.0, 50.0], [0, 0, 0, 0]]])
    props = tf.constant([[[60.0, 60.0, 90.0, 90.0], [10.0, 10.0, 45.0, 50.0], [0.0, 0.0, 0.0, 0.0]]])
    valid = tf.constant([[True, True, False]])
    s = sample_rois(props, valid, gt, tf.constant([[1, 0]]), 8, 0.25, 0.5, (0.1, 0.1, 0.2, 0.2))
    pos = s.pos_weights.numpy()[0]
    assert pos.tolist()[:2] == [1.0, 1.0] and pos[2:].sum() == 0          # the close proposal and the gt box
    assert s.classes.numpy()[0, :2].tolist() == [1, 1] and (s.classes.numpy()[0, 2:] == 0).all()
    assert s.weights.numpy()[0].sum() == 3                                 # 2 positives + 1 valid negative
    masks = np.zeros((1, 2, 64, 64), np.float32)
    masks[0, 0, 10:50, 10:30] = 1                                          # left half of the gt box
    t = mask_targets(tf.constant(masks), s.rois[:, :2], s.matched[:, :2], 8).numpy()[0]
    which = int(np.argmax(np.isclose(s.rois.numpy()[0, :2, 3], 50.0) & np.isclose(s.rois.numpy()[0, :2, 2], 50.0)))
    assert t[which][:, :4].all() and not t[which][:, 4:].any()


def test_head_shapes_and_nms_in_graph():
    from services.segnet.model import build_model

    c = tiny_config()
    model = build_model(c)
    images = tf.constant(rect_data(2).images)
    pyramid = model.pyramid(images)
    assert [tuple(p.shape[1:3]) for p in pyramid] == c.level_shapes()
    logits, deltas = model.rpn(pyramid)
    assert logits.shape == (2, len(model.anchors)) and deltas.shape == (2, len(model.anchors), 4)
    rois, valid = model.proposals(logits, deltas, 200, 24)
    assert rois.shape == (2, 24, 4) and valid.shape == (2, 24)
    cls, box = model.box_head(pyramid, rois)
    assert cls.shape == (2, 24, 2) and box.shape == (2, 24, 1, 4)
    assert model.mask_head(pyramid, rois).shape == (2, 24, 28, 28, 1)
    out = {k: v.numpy() for k, v in model.detect(images).items()}
    assert out["boxes"].shape == (2, 5, 4) and out["masks"].shape == (2, 5, 28, 28)
    assert out["scores"].shape == (2, 5) and out["classes"].dtype == np.int32 and out["num_detections"].shape == (2,)
    for b in range(2):
        n = out["num_detections"][b]
        assert np.all(np.diff(out["scores"][b, :n]) <= 1e-6)              # sorted by score
        assert np.all(out["scores"][b, n:] == 0) and np.all(out["masks"][b, n:] == 0)   # padding
        boxes = out["boxes"][b, :n][:, [1, 0, 3, 2]]
        iou = box_iou(boxes, boxes).numpy() - np.eye(n)
        assert np.all(iou <= c.detection_nms_iou + 1e-5)                  # NMS ran in the graph
        assert np.all(out["boxes"][b, :n, 2] <= W) and np.all(out["boxes"][b, :n, 3] <= H)


def test_augment_moves_masks_with_images_and_boxes_follow():
    data = rect_data(4)
    tf.random.set_seed(1)
    images, masks = augment(tf.constant(data.images), tf.constant(data.masks, tf.float32),
                            AugmentConfig(max_rotation_deg=0, scale_min=1, scale_max=1, brightness=0, contrast=0))
    assert images.shape == data.images.shape and images.dtype == tf.uint8
    assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
    # a pure flip keeps every rectangle bright under its (flipped) mask
    for i, j in zip(*np.nonzero(data.classes), strict=True):
        m = masks.numpy()[i, j] > 0.5
        assert m.sum() == data.masks[i, j].sum() and images.numpy()[i][m].min() >= 200
    boxes = boxes_from_masks(tf.constant(data.masks, tf.float32)).numpy()
    ys, xs = np.nonzero(data.masks[0, 0])
    assert np.allclose(boxes[0, 0], [ys.min(), xs.min(), ys.max() + 1, xs.max() + 1])
    assert np.all(boxes[0, 1] == 0)                                       # padding instance


def test_stages_and_learning_rate_schedule():
    assert parse_stages(None, 30, pretrained=True) == [("heads", 10), ("4+", 10), ("all", 10)]
    assert parse_stages(None, 30, pretrained=False) == [("all", 30)]
    assert parse_stages("heads:2,all:3", 99, True) == [("heads", 2), ("all", 3)]
    with pytest.raises(ValueError, match="LAYERS:EPOCHS"):
        parse_stages("body:2", 5, True)
    assert learning_rate(1.0, 0, 1000, 0.0, None) < 0.1                  # warm-up
    assert learning_rate(1.0, 100, 1000, 0.0, None) > learning_rate(1.0, 900, 1000, 0.0, None)
    assert learning_rate(1.0, 100, 1000, 59.0, 60.0) == pytest.approx(0.02, abs=0.01)   # time-boxed: ends low


def test_heads_stage_freezes_the_backbone():
    from services.segnet.model import build_model

    model = build_model(tiny_config())
    backbone = {id(v) for v in model.backbone_model.weights}
    total = len(model.trainable_variables)
    model.set_trainable_layers("heads")
    heads = len(model.trainable_variables)
    assert not any(id(v) in backbone for v in model.trainable_variables)
    model.set_trainable_layers("4+")
    deeper = len(model.trainable_variables)
    assert heads < deeper < total
    model.set_trainable_layers("all")
    assert len(model.trainable_variables) == total


def test_training_lowers_the_loss(trained):
    _, result = trained
    loss = result.history["loss"]
    assert len(loss) == 30 and all(np.isfinite(loss)) and result.steps == 60
    assert np.mean(loss[-3:]) < 0.6 * np.mean(loss[:3])
    # each head learns, not only one: its last epochs against its first (near the untrained loss). The mask
    # loss is averaged over the positive RoIs only, so the early epochs (few positives) scatter from 0.15 to
    # 0.6 across machines: a mean over them is no baseline (it failed CI once at 0.29 vs 0.7 x 0.41).
    for part in ("rpn_class", "class", "mask"):
        assert np.mean(result.history[part][-5:]) < 0.7 * result.history[part][0], part
    assert set(result.history) == {"rpn_class", "rpn_box", "class", "box", "mask", "loss"}


def test_export_and_local_backend_predict_match_in_process(trained, tmp_path):
    from sipec.serving.backends import LocalBackend

    data, result = trained
    version = export_model(result.model, tmp_path, "segnet", {"test": True})
    assets = version.path / "assets"
    assert (assets / "sipec.json").is_file() and (assets / "segnet.weights.h5").is_file()
    backend = LocalBackend(tmp_path, "segnet", poll_s=0)
    try:
        deadline = time.time() + 60
        while not backend.ready() and time.time() < deadline:
            time.sleep(0.1)
        meta = backend.metadata()
        assert meta.info["module"] == "segnet" and meta.info["input"] == {
            "height": H, "width": W, "channels": 3, "dtype": "uint8", "resize": meta.info["input"]["resize"]}
        assert meta.inputs["image"].dtype == "uint8" and meta.inputs["image"].shape == (None, H, W, 3)
        got = backend.predict({"image": data.images[:3]}).outputs
        want = {k: v.numpy() for k, v in result.model.detect(tf.constant(data.images[:3])).items()}
        assert set(got) == {"boxes", "scores", "classes", "masks", "num_detections"}
        assert np.array_equal(got["num_detections"], want["num_detections"])
        assert np.allclose(got["scores"], want["scores"], atol=1e-4)
        assert np.allclose(got["boxes"], want["boxes"], atol=1e-2)
        assert np.allclose(got["masks"], want["masks"], atol=1e-3)
    finally:
        backend.close()
