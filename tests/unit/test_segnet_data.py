"""SegNet data loading, VIA conversion, post-processing and CLI errors (no network involved)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from services.segnet.data import letterbox, letterbox_mask, load_coco, load_synth
from services.segnet.evaluate import folds
from services.segnet.postprocess import paste_mask, to_instances
from services.segnet.via import via_to_coco
from sipec.cli import main
from sipec.data.coco import write_coco_instances


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--animals", "3", "--frames", "6", "--seed", "4",
                 "--size", "320x240"]) == 0
    return out


def test_letterbox_scales_the_longer_side_and_pads_bottom_right():
    img = np.full((240, 320, 3), 200, np.uint8)
    out, scale = letterbox(img, 64)
    assert out.shape == (64, 64, 3) and scale == pytest.approx(0.2)
    assert out[:48].min() == 200 and out[48:].max() == 0
    m = np.zeros((240, 320), bool)
    m[0:120, 160:320] = True
    lm = letterbox_mask(m, 64)
    assert lm[:24, 32:].all() and not lm[24:].any()


def test_load_synth_reads_frames_of_the_video_with_their_masks(synth):
    data = load_synth(synth, 64, max_instances=4)
    assert data.images.shape == (6, 64, 64, 3) and data.masks.shape == (6, 4, 64, 64)
    assert data.class_names == ["animal"] and data.images.max() > 0
    assert (data.classes > 0).sum(axis=1).max() <= 3
    for i, j in zip(*np.nonzero(data.classes), strict=True):
        assert data.masks[i, j].any() and not data.masks[i, j, 48:].any()   # nothing in the padding


def test_load_synth_missing_folder_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="annotations.json"):
        load_synth(tmp_path, 64)


def test_via_polygons_and_rects_become_coco(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((50, 60, 3), np.uint8))
    via = {"_via_img_metadata": {"a.png1": {"filename": "a.png", "size": 1, "regions": [
        {"shape_attributes": {"name": "rect", "x": 10, "y": 5, "width": 20, "height": 10},
         "region_attributes": {"species": "mouse"}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [40, 55, 55, 40], "all_points_y": [30, 30, 45, 45]},
         "region_attributes": {"species": "rat"}}]}}}
    (tmp_path / "via.json").write_text(json.dumps(via))
    coco = via_to_coco(tmp_path / "via.json", tmp_path, "species")
    assert [c["name"] for c in coco.categories] == ["mouse", "rat"]
    assert coco.annotations[0]["area"] == 200 and coco.annotations[0]["bbox"] == [10, 5, 20, 10]
    assert coco.annotations[1]["category_id"] == 2
    write_coco_instances(tmp_path / "coco.json", coco)
    data = load_coco(tmp_path / "coco.json", 64, images_dir=tmp_path)
    assert data.class_names == ["mouse", "rat"] and sorted(data.classes[0][:2]) == [1, 2]
    bad = {"_via_img_metadata": {"x": {"filename": "a.png", "regions": [
        {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}]}}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="region 0.*'point' is not supported"):
        via_to_coco(tmp_path / "bad.json", tmp_path)


def test_paste_mask_fills_the_box():
    m = paste_mask(np.ones((28, 28), np.float32), (10, 20, 30, 25), 40, 50)
    ys, xs = np.nonzero(m)
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (10, 30, 20, 25)
    half = np.zeros((28, 28), np.float32)
    half[:, :14] = 1.0                                  # left half of the box
    ys, xs = np.nonzero(paste_mask(half, (0, 0, 20, 10), 10, 20))
    assert xs.max() + 1 == 10


def test_to_instances_filters_sorts_and_maps_back():
    masks = np.ones((3, 14, 14), np.float32)
    det = {"boxes": np.array([[0, 0, 10, 10], [20, 20, 40, 30], [5, 5, 8, 8], [0, 0, 0, 0]], np.float32),
           "scores": np.array([0.5, 0.9, 0.2, 0.0], np.float32), "classes": np.zeros(4, np.int32),
           "masks": np.concatenate([masks, np.zeros((1, 14, 14), np.float32)]), "num_detections": np.array(3)}
    out = to_instances(det, 0.5, 100, 100, ["animal"])
    assert [i.score for i in out] == pytest.approx([0.9, 0.5, 0.2])
    assert out[0].box == (40, 40, 80, 60) and out[0].class_name == ""
    assert out[0].com == pytest.approx((60.0, 50.0))
    assert len(to_instances(det, 0.5, 100, 100, ["animal"], min_score=0.4)) == 2
    assert len(to_instances(det, 0.5, 100, 100, ["animal"], max_instances=1)) == 1
    bare = to_instances(det, 0.5, 100, 100, ["animal"], omit_masks=True)
    assert bare[0].rle is None and bare[0].com is not None


def test_folds_are_contiguous_and_cover_everything():
    parts = folds(10, 5)
    assert [list(te) for _, te in parts] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert all(len(tr) == 8 for tr, _ in parts)
    with pytest.raises(ValueError, match="--folds"):
        folds(3, 5)


def test_cli_errors_name_the_file_or_flag(tmp_path, capsys):
    assert main(["train", "segnet", "--coco", str(tmp_path / "nope.json"), "--images", str(tmp_path),
                 "--out", str(tmp_path / "repo")]) == 2
    assert "--coco: file not found" in capsys.readouterr().err
    assert main(["train", "segnet", "--synth", str(tmp_path), "--out", str(tmp_path / "repo")]) == 2
    assert "annotations.json: not found" in capsys.readouterr().err
    assert main(["train", "segnet", "--synth", str(tmp_path), "--out", str(tmp_path / "r"), "--image-size", "100"]) == 2
    assert "--image-size" in capsys.readouterr().err
    assert main(["evaluate", "segnet", "--synth", str(tmp_path), "--folds", "2"]) == 2
