"""sipec.metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sipec import geometry
from sipec import metrics as M

H, W = 64, 64


def _square(x: int, y: int, s: int = 12) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y:y + s, x:x + s] = True
    return m


GT_MASKS = [[_square(2, 2), _square(30, 30)], [_square(10, 40)], []]


@pytest.fixture(scope="module")
def gt() -> dict:
    return M.coco_ground_truth(GT_MASKS, (H, W))


# --- mAP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("iou_type", ["segm", "bbox"])
def test_map_is_one_for_perfect_detections(gt: dict, iou_type: str) -> None:
    dets = M.coco_detections(GT_MASKS, [[0.9, 0.8], [0.7], []])
    res = M.mean_average_precision(gt, dets, iou_type=iou_type)
    assert res.map == pytest.approx(1.0) and res.map_50 == pytest.approx(1.0)
    assert res.map_50_95 == pytest.approx(1.0)
    assert res.per_class == {"animal": pytest.approx(1.0)}


def test_map_drops_for_shifted_detections(gt: dict) -> None:
    # shifted by 3 px of 12: IoU = 9*12 / (15*12) = 0.6
    shifted = [[_square(5, 2), _square(33, 30)], [_square(13, 40)], []]
    res = M.mean_average_precision(gt, M.coco_detections(shifted, [[0.9, 0.8], [0.7], []]))
    assert res.map_50 == pytest.approx(1.0)  # every IoU (0.6) clears 0.5
    assert 0.0 < res.map_50_95 < 0.5  # but fails 0.65 .. 0.95
    strict = M.mean_average_precision(gt, M.coco_detections(shifted, [[0.9, 0.8], [0.7], []]),
                                      iou_threshold=0.75)
    assert strict.map == pytest.approx(0.0) and strict.iou_threshold == 0.75
    assert strict.map_50_95 == pytest.approx(res.map_50_95)


def test_map_with_a_false_positive_ranked_first(gt: dict) -> None:
    dets = M.coco_detections([[_square(2, 2), _square(30, 30), _square(50, 2)], [_square(10, 40)], []],
                             [[0.9, 0.8, 0.95], [0.7], []])
    res = M.mean_average_precision(gt, dets)
    assert 0.5 < res.map < 1.0


def test_map_is_zero_without_detections(gt: dict) -> None:
    res = M.mean_average_precision(gt, [])
    assert res.map == 0.0 and res.map_50_95 == 0.0
    wrong_place = M.coco_detections([[_square(50, 50)], [], []], [[0.9], [], []])
    assert M.mean_average_precision(gt, wrong_place).map == 0.0


def test_map_accepts_plain_coco_dicts_without_optional_fields() -> None:
    mask = _square(5, 5)
    rle = geometry.rle_to_json(geometry.encode_rle(mask))  # str counts, as in a JSON file
    gt = {"images": [{"id": 7, "height": H, "width": W}], "categories": [{"id": 3, "name": "mouse"}],
          "annotations": [{"image_id": 7, "category_id": 3, "segmentation": rle}]}
    dets = [{"image_id": 7, "segmentation": rle, "score": 0.5}]  # category_id implied (one category)
    res = M.mean_average_precision(gt, dets)
    assert res.map == pytest.approx(1.0) and res.per_class == {"mouse": pytest.approx(1.0)}
    assert "id" not in gt["annotations"][0]  # inputs are not modified
    with pytest.raises(ValueError, match="image_id 8 is not in gt"):
        M.mean_average_precision(gt, [{"image_id": 8, "segmentation": rle, "score": 1.0}])


def test_map_per_class() -> None:
    masks = [[_square(2, 2), _square(30, 30)]]
    gt = M.coco_ground_truth(masks, (H, W), category_ids_per_image=[[1, 2]], category_names=("a", "b"))
    dets = M.coco_detections(masks, [[0.9, 0.9]], category_ids_per_image=[[1, 1]])  # b labelled as a
    res = M.mean_average_precision(gt, dets)
    assert res.per_class["b"] == 0.0 and 0.0 < res.per_class["a"] < 1.0 + 1e-9
    assert res.map == pytest.approx((res.per_class["a"] + res.per_class["b"]) / 2)


# --- matching, IoU, Dice -------------------------------------------------------------------------


def test_match_masks_greedy_by_iou() -> None:
    gt = [_square(0, 0, 10), _square(20, 20, 10)]
    pred = [_square(21, 20, 10), _square(0, 0, 10), _square(50, 50, 5)]
    pairs = M.match_masks(gt, pred)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]
    assert pairs[0][2] == 1.0 and pairs[1][2] == pytest.approx(90 / 110)
    assert M.mean_iou(gt, pred) == pytest.approx((1.0 + 90 / 110) / 2)
    assert M.mean_dice(gt, pred) == pytest.approx((1.0 + 2 * 90 / 200) / 2)
    assert M.match_masks(gt, pred, min_iou=0.9) == [(0, 1, 1.0)]
    assert math.isnan(M.mean_iou(gt, []))


def test_match_masks_one_to_one() -> None:
    gt = [_square(0, 0, 10)]
    pred = [_square(1, 0, 10), _square(0, 0, 10)]  # both overlap the one GT; the better wins
    assert M.match_masks(gt, pred) == [(0, 1, 1.0)]
    rles = [geometry.encode_rle(m) for m in pred]  # RLE dicts are accepted too
    assert M.match_masks(gt, rles) == [(0, 1, 1.0)]


# --- classification ------------------------------------------------------------------------------

Y_TRUE = ["rest", "groom", "groom", "eat", "eat", "eat"]
Y_PRED = ["rest", "groom", "eat", "eat", "eat", "rest"]


def test_accuracy_and_per_class_accuracy() -> None:
    assert M.accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    per = M.per_class_accuracy(Y_TRUE, Y_PRED)
    assert per == {"eat": pytest.approx(2 / 3), "groom": 0.5, "rest": 1.0}
    with_unseen = M.per_class_accuracy(Y_TRUE, Y_PRED, labels=["rest", "fight"])
    assert with_unseen["rest"] == 1.0 and math.isnan(with_unseen["fight"])


def test_confusion_matrix_by_hand() -> None:
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, labels=["rest", "groom", "eat"])
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [1, 0, 2]])
    np.testing.assert_array_equal(M.confusion_matrix([0, 1, 1], [1, 1, 0]), [[0, 1], [1, 1]])


def test_precision_recall_f1_and_macro_f1_by_hand() -> None:
    scores = M.precision_recall_f1(Y_TRUE, Y_PRED)
    # eat: tp 2, fp 1, fn 1 -> p 2/3, r 2/3, f1 2/3;  groom: tp 1, fp 0, fn 1 -> p 1, r 1/2, f1 2/3
    # rest: tp 1, fp 1, fn 0 -> p 1/2, r 1, f1 2/3
    assert scores["eat"].precision == pytest.approx(2 / 3) and scores["eat"].support == 3
    assert (scores["groom"].precision, scores["groom"].recall) == (1.0, 0.5)
    assert (scores["rest"].precision, scores["rest"].recall) == (0.5, 1.0)
    assert all(s.f1 == pytest.approx(2 / 3) for s in scores.values())
    assert M.macro_f1(Y_TRUE, Y_PRED) == pytest.approx(2 / 3)
    # an extra listed class never seen counts as F1 0 in the macro mean
    assert M.macro_f1(Y_TRUE, Y_PRED, labels=["rest", "groom", "eat", "fight"]) == pytest.approx(0.5)
    assert M.macro_f1([1, 1, 0], [1, 1, 0]) == 1.0


def test_classification_input_errors() -> None:
    with pytest.raises(ValueError, match="same length"):
        M.accuracy([1, 2], [1])
    assert math.isnan(M.accuracy([], []))


# --- correlation ---------------------------------------------------------------------------------


def test_pearson_hand_values() -> None:
    assert M.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = [1,2,3,4], y = [1,3,2,4]: cov = 4, var_x = var_y = 5 -> r = 0.8
    assert M.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert M.pearson([1, 2, np.nan, 3], [2, 4, 100, 6]) == pytest.approx(1.0)  # NaN steps dropped


def test_pearson_constant_or_short_series_is_nan() -> None:
    assert math.isnan(M.pearson([1, 1, 1], [1, 2, 3]))
    assert math.isnan(M.pearson([1.0], [2.0]))
    per = M.pearson_per_class(np.array([[1, 0, 5], [2, 0, 5], [3, 1, 5]]), np.array([[1, 1, 0], [2, 1, 1], [3, 0, 2]]))
    assert per[0] == pytest.approx(1.0) and per[1] == pytest.approx(-1.0) and math.isnan(per[2])


# --- pose ----------------------------------------------------------------------------------------


def test_rmse_ignores_missing_keypoints() -> None:
    true = np.array([[[0.0, 0.0], [10.0, 10.0], [np.nan, np.nan]]])
    pred = np.array([[[3.0, 4.0], [np.nan, np.nan], [1.0, 1.0]]])
    value, count = M.rmse(pred, true)
    assert (value, count) == (pytest.approx(5.0), 1)
    value, count = M.rmse([[0, 0], [3, 4], [0, 1]], [[0, 0], [0, 0], [0, 0]])
    assert count == 3 and value == pytest.approx(math.sqrt((0 + 25 + 1) / 3))
    nothing, n = M.rmse([[np.nan, 0.0]], [[0.0, 0.0]])
    assert math.isnan(nothing) and n == 0


def test_pck() -> None:
    true = np.array([[0, 0], [0, 0], [0, 0], [np.nan, np.nan]], dtype=float)
    pred = np.array([[1, 0], [3, 4], [np.nan, np.nan], [0, 0]], dtype=float)
    # present in truth: 3; within 5 px: two (distances 1 and 5); the missing prediction is wrong
    assert M.pck(pred, true, 5.0) == pytest.approx(2 / 3)
    assert M.pck(pred, true, 2.0) == pytest.approx(1 / 3)
    # normalised threshold: 0.1 * scale 50 = 5 px
    assert M.pck(pred, true, 0.1, scale=50.0) == pytest.approx(2 / 3)
    per_instance = M.pck(pred[None], true[None], 0.1, scale=np.array([20.0])[:, None])  # 2 px
    assert per_instance == pytest.approx(1 / 3)
    assert math.isnan(M.pck(pred[3:], true[3:], 5.0))
