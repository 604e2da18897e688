"""SegNet data loading, VIA conversion, post-processing, evaluation and CLI errors (no network trained)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from services.segnet.data import letterbox, letterbox_mask, load_coco, load_synth, parse_frames
from services.segnet.evaluate import evaluate
from services.segnet.postprocess import paste_mask, to_instances
from services.segnet.via import main as via_main
from services.segnet.via import via_to_coco
from sipec.cli import main
from sipec.data.coco import write_coco_instances


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    assert main(["synth", "--out", str(out), "--animals", "3", "--frames", "6", "--seed", "4",
                 "--size", "320x240", "--quiet"]) == 0
    return out


@pytest.fixture()
def rect_coco(tmp_path):
    """Two PNG images with rectangles drawn as VIA regions of two classes, converted to COCO."""
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.zeros((50, 60, 3), np.uint8))
    via = {"_via_img_metadata": {
        "a.png1": {"filename": "a.png", "size": 1, "regions": [
            {"shape_attributes": {"name": "rect", "x": 10, "y": 5, "width": 20, "height": 10},
             "region_attributes": {"species": "mouse"}},
            {"shape_attributes": {"name": "polygon", "all_points_x": [40, 55, 55, 40],
                                  "all_points_y": [30, 30, 45, 45]},
             "region_attributes": {"species": "rat"}}]},
        "b.png2": {"filename": "b.png", "size": 1, "regions": {"0": {
            "shape_attributes": {"name": "rect", "x": 0, "y": 20, "width": 30, "height": 30},
            "region_attributes": {"species": "mouse"}}}}}}
    (tmp_path / "via.json").write_text(json.dumps(via))
    return tmp_path


def test_letterbox_scales_to_fit_and_pads_bottom_right():
    img = np.full((240, 320, 3), 200, np.uint8)
    out, scale = letterbox(img, 64, 96)
    assert out.shape == (64, 96, 3) and scale == pytest.approx(64 / 240)
    assert out[:, :85].min() == 200 and out[:, 86:].max() == 0
    m = np.zeros((240, 320), bool)
    m[0:120, 160:320] = True
    lm = letterbox_mask(m, 64, 96)
    assert lm[:32, 43:85].all() and not lm[33:].any() and not lm[:, 86:].any()


def test_load_synth_reads_video_frames_with_masks_at_both_resolutions(synth):
    data = load_synth(synth, (64, 96), max_instances=4)
    assert data.images.shape == (6, 64, 96, 3) and data.masks.shape[0] == 6 and data.masks.shape[2:] == (64, 96)
    assert data.class_names == ["animal"] and data.images.max() > 0
    assert np.allclose(data.scales, 64 / 240) and (data.frame_sizes == [240, 320]).all()
    assert all(len(g) == int((c > 0).sum()) for g, c in zip(data.gt, data.classes, strict=True))
    assert data.gt[0][0][1]["size"] == [240, 320]
    part = load_synth(synth, (64, 96), frames=slice(4, None))
    assert len(part) == 2 and part.sources[0].endswith("#4")
    for i, j in zip(*np.nonzero(data.classes), strict=True):
        assert data.masks[i, j].any() and not data.masks[i, j, :, 86:].any()   # nothing in the padding


def test_load_synth_missing_folder_names_the_file(tmp_path):
    with pytest.raises(ValueError, match="annotations.json"):
        load_synth(tmp_path, (64, 64))


def test_via_regions_become_coco_and_load(rect_coco):
    coco = via_to_coco(rect_coco / "via.json", rect_coco, "species")
    assert [c["name"] for c in coco.categories] == ["mouse", "rat"]
    assert coco.annotations[0]["area"] == 200 and coco.annotations[0]["bbox"] == [10, 5, 20, 10]
    assert [a["category_id"] for a in coco.annotations] == [1, 2, 1]
    write_coco_instances(rect_coco / "coco.json", coco)
    data = load_coco(rect_coco / "coco.json", rect_coco, (64, 64))
    assert data.class_names == ["mouse", "rat"] and sorted(data.classes[0][:2]) == [1, 2]
    bad = {"_via_img_metadata": {"x": {"filename": "a.png", "regions": [
        {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}}]}}}
    (rect_coco / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="region 0.*'point' is not supported"):
        via_to_coco(rect_coco / "bad.json", rect_coco)


def test_via_converter_command(rect_coco, capsys):
    assert via_main([str(rect_coco / "via.json"), "--images", str(rect_coco), "--out", str(rect_coco / "c.json"),
                     "--class-attribute", "species"]) == 0
    assert json.loads((rect_coco / "c.json").read_text())["categories"][1]["name"] == "rat"
    assert via_main([str(rect_coco / "nope.json"), "--images", str(rect_coco), "--out", str(rect_coco / "d.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_evaluate_perfect_and_empty_predictions(rect_coco):
    """The evaluation pipeline scores the ground truth itself as 1.0 and no detections as 0."""
    write_coco_instances(rect_coco / "coco.json", via_to_coco(rect_coco / "via.json", rect_coco))
    data = load_coco(rect_coco / "coco.json", rect_coco, (64, 64))

    def oracle(images):
        n, g = len(images), data.masks.shape[1]
        out = {"boxes": np.zeros((n, g, 4), np.float32), "scores": np.zeros((n, g), np.float32),
               "classes": np.zeros((n, g), np.int32), "masks": np.ones((n, g, 28, 28), np.float32),
               "num_detections": np.zeros(n, np.int32)}
        for i in range(n):
            k = 0
            for j in range(g):
                ys, xs = np.nonzero(data.masks[i, j])
                if ys.size:
                    out["boxes"][i, k] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
                    out["scores"][i, k] = 0.9
                    k += 1
            out["num_detections"][i] = k
        return out

    row = evaluate(oracle, data)
    assert row["instances"] == 3 and row["detections"] == 3
    assert row["map50"] == pytest.approx(1.0) and row["box_map50"] == pytest.approx(1.0)
    assert row["mean_iou"] > 0.9 and row["recall50"] == 1.0
    empty = evaluate(lambda images: {**oracle(images), "num_detections": np.zeros(len(images), np.int32)}, data)
    assert empty["map50"] == 0.0 and empty["detections"] == 0 and np.isnan(empty["mean_iou"])


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
    out = to_instances(det, 0.5, 100, 100, ["animal"], mask_overlap=1.0)
    assert [i.score for i in out] == pytest.approx([0.9, 0.5, 0.2])
    # the 0.2 detection's mask lies wholly inside the 0.5 one's: a part of the same animal, suppressed by default
    assert [i.score for i in to_instances(det, 0.5, 100, 100, ["animal"])] == pytest.approx([0.9, 0.5])
    touching = {**det, "boxes": np.array([[0, 0, 10, 10], [9, 0, 19, 10], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32),
                "num_detections": np.array(2)}   # two animals sharing a 2-pixel strip of their masks: both kept
    assert len(to_instances(touching, 0.5, 100, 100, ["animal"])) == 2
    assert out[0].box == (40, 40, 80, 60) and out[0].class_name == ""
    assert out[0].com == pytest.approx((60.0, 50.0))
    assert len(to_instances(det, 0.5, 100, 100, ["animal"], min_score=0.4, mask_overlap=1.0)) == 2
    assert len(to_instances(det, 0.5, 100, 100, ["animal"], max_instances=1)) == 1
    bare = to_instances(det, 0.5, 100, 100, ["animal"], omit_masks=True)
    assert bare[0].rle is None and bare[0].com is not None
    named = to_instances({**det, "classes": np.array([1, 0, 1, 0], np.int32)}, 0.5, 100, 100, ["mouse", "rat"],
                         mask_overlap=1.0)
    assert [i.class_name for i in named] == ["mouse", "rat", "rat"]


def test_to_instances_equals_the_frame_wide_computation():
    """Box, area, centre of mass and RLE come from the pasted patch alone; they must equal what the whole-frame
    mask gives (random soft masks, boxes partly outside the frame, fractional scale)."""
    from sipec import geometry

    rng = np.random.default_rng(0)
    h, w = 120, 160
    boxes = np.concatenate([rng.uniform(-20, 100, (12, 2)), rng.uniform(5, 90, (12, 2))], axis=1)
    boxes[:, 2:] += boxes[:, :2]
    soft = cv2.GaussianBlur(rng.uniform(0, 1, (12, 28, 28)).astype(np.float32).transpose(1, 2, 0), (7, 7), 2)
    det = {"boxes": boxes.astype(np.float32), "scores": np.linspace(0.95, 0.4, 12).astype(np.float32),
           "classes": np.zeros(12, np.int32), "masks": soft.transpose(2, 0, 1), "num_detections": np.array(12)}
    out = to_instances(det, 0.8, h, w, ["animal"], mask_overlap=1.0)
    assert len(out) >= 6
    for inst in out:
        i = int(np.flatnonzero(np.isclose(det["scores"], inst.score))[0])
        box = np.clip(det["boxes"][i].astype(np.float64) / 0.8, 0, [w, h, w, h])
        ref = paste_mask(det["masks"][i], box, h, w)
        assert np.array_equal(inst.mask, ref)
        assert inst.box == geometry.mask_box(ref)
        assert inst.com == pytest.approx(geometry.center_of_mass(ref))
        assert inst.rle == geometry.encode_rle(ref)


def test_frames_option():
    assert parse_frames("0:1050") == slice(0, 1050) and parse_frames("1050:") == slice(1050, None)
    with pytest.raises(ValueError, match="START:STOP"):
        parse_frames("12")


def test_cli_errors_name_the_file_or_flag(tmp_path, synth, capsys):
    repo = str(tmp_path / "repo")
    assert main(["train", "segnet", "--coco", str(tmp_path / "nope.json"), "--images", str(tmp_path),
                 "--out", repo]) == 2
    assert "--coco: file not found" in capsys.readouterr().err
    assert main(["train", "segnet", "--synth", str(tmp_path), "--out", repo]) == 2
    assert "annotations.json: not found" in capsys.readouterr().err
    assert main(["train", "segnet", "--synth", str(synth), "--out", repo, "--image-size", "100x64"]) == 2
    assert "--image-size" in capsys.readouterr().err
    assert main(["train", "segnet", "--synth", str(synth), "--out", repo, "--frames", "7"]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["train", "segnet", "--synth", str(synth), "--out", repo, "--weights", str(tmp_path / "w.h5")]) == 2
    assert "--weights: file not found" in capsys.readouterr().err
    assert main(["evaluate", "segnet", "--synth", str(synth)]) == 2
    assert "--model-repo, --folds" in capsys.readouterr().err
    assert main(["evaluate", "segnet", "--synth", str(synth), "--model-repo", str(tmp_path / "none")]) == 2
    assert "--model-repo: directory not found" in capsys.readouterr().err
    assert main(["evaluate", "segnet", "--synth", str(synth), "--folds", "9"]) == 2
    assert "--folds/--train-sizes/--test-fraction: folds must be between 2 and the number of items (6)" in (
        capsys.readouterr().err)


@pytest.mark.slow
def test_folds_and_label_count_ablation_train_and_score_each_split(synth, tmp_path, capsys):
    """`--folds 2` trains a model per fold and scores its held-out images; `--train-sizes 2,4` trains on 2 and 4
    images and scores one common test set; both land in the JSON with the mean and spread of the folds."""
    out = tmp_path / "protocols.json"
    assert main(["evaluate", "segnet", "--synth", str(synth), "--folds", "2", "--train-sizes", "2,4",
                 "--test-fraction", "0.3", "--epochs", "1", "--batch-size", "2", "--image-size", "128",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["fold"] for r in report["folds"]] == [1, 2]
    assert all(r["train_images"] == 3 and r["images"] == 3 and r["steps"] > 0 for r in report["folds"])
    maps = [r["map50"] for r in report["folds"]]        # pycocotools gives -1 when a fold has nothing to score
    assert all(isinstance(m, float) and math.isfinite(m) and m >= 0 for m in maps)
    sd = float(np.std(maps, ddof=1))
    assert report["folds_summary"]["map50"] == pytest.approx({"mean": float(np.mean(maps)), "sd": sd,
                                                              "sem": sd / math.sqrt(2), "n": 2})
    assert [r["train_images"] for r in report["train_sizes"]] == [2, 4]
    assert report["peak"]["size"] in (2, 4) and {Path(p).suffix for p in report["plot"]} == {".png", ".svg"}
    assert (tmp_path / "protocols.png").is_file()
    assert len({r["images"] for r in report["train_sizes"]}) == 1      # the same test images for every size
    assert "2-fold mAP@0.5" in capsys.readouterr().out
