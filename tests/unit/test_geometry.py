"""sipec.geometry against hand-computed values and hypothesis properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sipec import geometry as g

SETTINGS = settings(max_examples=40, deadline=None)


def _rect(h: int, w: int, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y1:y2, x1:x2] = True
    return m


@st.composite
def mask_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    h = draw(st.integers(1, 16))
    w = draw(st.integers(1, 16))
    return draw(hnp.arrays(np.bool_, (h, w))), draw(hnp.arrays(np.bool_, (h, w)))


coord = st.floats(-50, 50, allow_nan=False, width=32)


@st.composite
def boxes(draw: st.DrawFn) -> tuple[float, float, float, float]:
    x1, y1 = draw(coord), draw(coord)
    return x1, y1, x1 + draw(st.floats(0, 40, width=32)), y1 + draw(st.floats(0, 40, width=32))


# --- boxes and centres ---------------------------------------------------------------------------


def test_mask_box_is_exclusive_at_x2_y2() -> None:
    m = np.zeros((10, 10), bool)
    m[5, 3] = True
    assert g.mask_box(m) == (3.0, 5.0, 4.0, 6.0)
    assert g.mask_box(_rect(10, 12, 2, 1, 7, 4)) == (2.0, 1.0, 7.0, 4.0)
    assert g.mask_box(np.zeros((4, 4), bool)) is None
    assert g.mask_box(np.ones((3, 5), np.uint8)) == (0.0, 0.0, 5.0, 3.0)


@SETTINGS
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_mask_box_is_tight(mask: np.ndarray) -> None:
    box = g.mask_box(mask)
    if not mask.any():
        assert box is None
        return
    x1, y1, x2, y2 = (int(v) for v in box)
    assert mask[y1:y2, x1:x2].sum() == mask.sum()  # contains every pixel
    assert mask[y1, x1:x2].any() and mask[y2 - 1, x1:x2].any()  # and touches each side
    assert mask[y1:y2, x1].any() and mask[y1:y2, x2 - 1].any()


def test_center_of_mass_hand_values() -> None:
    m = np.zeros((10, 10), bool)
    m[5, 3] = True
    assert g.center_of_mass(m) == (3.5, 5.5)  # pixel centre
    assert g.center_of_mass(_rect(20, 30, 5, 4, 12, 10)) == (8.5, 7.0)
    l_shape = np.zeros((4, 4), bool)
    l_shape[0, 0] = l_shape[0, 1] = l_shape[1, 0] = True  # x: 0,1,0  y: 0,0,1
    cx, cy = g.center_of_mass(l_shape)
    assert cx == pytest.approx(1 / 3 + 0.5) and cy == pytest.approx(1 / 3 + 0.5)
    assert g.center_of_mass(np.zeros((3, 3), bool)) is None


@SETTINGS
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_center_of_mass_is_mean_pixel_centre(mask: np.ndarray) -> None:
    com = g.center_of_mass(mask)
    if not mask.any():
        assert com is None
        return
    ys, xs = np.nonzero(mask)
    assert com == pytest.approx((xs.mean() + 0.5, ys.mean() + 0.5), abs=1e-9)
    x1, y1, x2, y2 = g.mask_box(mask)
    assert x1 <= com[0] <= x2 and y1 <= com[1] <= y2


def test_mask_area() -> None:
    assert g.mask_area(_rect(5, 5, 1, 1, 4, 3)) == 6
    assert g.mask_area(np.zeros((2, 2), bool)) == 0


# --- RLE -----------------------------------------------------------------------------------------


@SETTINGS
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 20), st.integers(1, 20))))
def test_rle_round_trip_bytes_and_json(mask: np.ndarray) -> None:
    rle = g.encode_rle(mask)
    assert isinstance(rle["counts"], bytes) and list(rle["size"]) == list(mask.shape)
    np.testing.assert_array_equal(g.decode_rle(rle), mask)
    as_json = g.rle_to_json(rle)
    assert isinstance(as_json["counts"], str) and as_json["size"] == list(mask.shape)
    np.testing.assert_array_equal(g.decode_rle(as_json), mask)


# --- IoU and Dice --------------------------------------------------------------------------------


def test_mask_iou_and_dice_hand_values() -> None:
    a = _rect(4, 4, 0, 0, 2, 2)  # 4 px
    b = _rect(4, 4, 1, 0, 3, 2)  # 4 px, overlap 2
    assert g.mask_iou(a, b) == pytest.approx(2 / 6)
    assert g.dice(a, b) == pytest.approx(2 * 2 / 8)
    assert g.mask_iou(a, a) == 1.0 and g.dice(a, a) == 1.0
    assert g.mask_iou(a, _rect(4, 4, 3, 3, 4, 4)) == 0.0
    empty = np.zeros((4, 4), bool)
    assert g.mask_iou(empty, empty) == 0.0 and g.dice(empty, empty) == 0.0


def test_box_iou_hand_values() -> None:
    assert g.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert g.box_iou((0, 0, 2, 2), (0, 0, 2, 2)) == 1.0
    assert g.box_iou((0, 0, 2, 2), (2, 0, 4, 2)) == 0.0  # touching edges: x2 is exclusive
    assert g.box_iou((0, 0, 4, 4), (1, 1, 2, 2)) == pytest.approx(1 / 16)
    assert g.box_iou((1, 1, 1, 1), (1, 1, 1, 1)) == 0.0  # zero area


def test_box_iou_matches_mask_iou_of_the_box_masks() -> None:
    a, b = (1, 2, 7, 9), (4, 0, 10, 5)
    ma, mb = _rect(12, 12, *a), _rect(12, 12, *b)
    assert g.box_iou(a, b) == pytest.approx(g.mask_iou(ma, mb))


@SETTINGS
@given(mask_pairs())
def test_mask_iou_properties(pair: tuple[np.ndarray, np.ndarray]) -> None:
    a, b = pair
    iou = g.mask_iou(a, b)
    assert 0.0 <= iou <= 1.0
    assert iou == g.mask_iou(b, a)
    assert g.dice(a, b) == pytest.approx(2 * iou / (1 + iou))
    if a.any():
        assert g.mask_iou(a, a) == 1.0


@SETTINGS
@given(boxes(), boxes())
def test_box_iou_symmetric_in_unit_interval(a: tuple, b: tuple) -> None:
    iou = g.box_iou(a, b)
    assert 0.0 <= iou <= 1.0 + 1e-9
    assert iou == pytest.approx(g.box_iou(b, a))


@SETTINGS
@given(st.integers(1, 12), st.integers(1, 12), st.integers(0, 4), st.integers(0, 4), st.data())
def test_mask_iou_matrix_equals_pairwise_mask_iou(h: int, w: int, na: int, nb: int, data: st.DataObject) -> None:
    masks_a = [data.draw(hnp.arrays(np.bool_, (h, w))) for _ in range(na)]
    masks_b = [data.draw(hnp.arrays(np.bool_, (h, w))) for _ in range(nb)]
    rles_a = [g.encode_rle(m) for m in masks_a]
    rles_b = [g.rle_to_json(g.encode_rle(m)) for m in masks_b]  # str counts are accepted too
    mat = g.mask_iou_matrix(rles_a, rles_b)
    assert mat.shape == (na, nb)
    for i, ma in enumerate(masks_a):
        for j, mb in enumerate(masks_b):
            assert mat[i, j] == pytest.approx(g.mask_iou(ma, mb), abs=1e-12)


# --- dilation and crops --------------------------------------------------------------------------


def test_dilate_hand_values() -> None:
    m = np.zeros((9, 9), bool)
    m[4, 4] = True
    np.testing.assert_array_equal(g.dilate(m, 0), m)
    assert g.dilate(m, 0) is not m
    one = g.dilate(m, 1)
    assert one.dtype == bool and one.sum() == 5  # 3x3 ellipse is a cross
    assert one[3, 4] and one[4, 3] and not one[3, 3]
    two = g.dilate(m, 2)
    assert two[2, 4] and two[6, 4] and two[4, 2] and two[4, 6]  # reaches 2 px along both axes
    assert not (two[2, 2] or two[2, 6] or two[6, 2] or two[6, 6])  # but not the box corners
    assert not two[:2].any() and not two[7:].any() and not two[:, :2].any() and not two[:, 7:].any()
    assert g.dilate(m, 4).sum() > g.dilate(m, 3).sum()


@SETTINGS
@given(hnp.arrays(np.bool_, st.tuples(st.integers(1, 15), st.integers(1, 15))), st.integers(0, 3))
def test_dilate_contains_the_mask_and_grows_monotonically(mask: np.ndarray, px: int) -> None:
    d = g.dilate(mask, px)
    assert d.shape == mask.shape and d.dtype == bool
    assert np.all(d[mask])
    assert np.all(g.dilate(mask, px + 1)[d])


def test_crop_inside_the_image() -> None:
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    crop = g.crop_around(img, (6.0, 5.0), 4)
    np.testing.assert_array_equal(crop, img[3:7, 4:8])
    assert g.crop_origin((6.0, 5.0), 4) == (4, 3)
    # non-square (h, w), grey image
    grey = img[:, :, 0]
    np.testing.assert_array_equal(g.crop_around(grey, (6.0, 5.0), (2, 6)), grey[4:6, 3:9])


def test_crop_partially_and_fully_outside_is_filled() -> None:
    img = np.full((6, 8, 3), 9, np.uint8)
    crop = g.crop_around(img, (0.0, 0.0), 4, fill=255)  # covers x, y in [-2, 2)
    assert crop.shape == (4, 4, 3)
    assert np.all(crop[2:, 2:] == 9)
    assert np.all(crop[:2] == 255) and np.all(crop[:, :2] == 255)
    corner = g.crop_around(img, (8.0, 6.0), 4)  # bottom-right corner: x, y in [6, 10) x [4, 8)
    assert np.all(corner[:2, :2] == 9) and np.all(corner[2:] == 0) and np.all(corner[:, 2:] == 0)
    assert np.all(g.crop_around(img, (100.0, 100.0), 3) == 0)


def test_crop_origin_matches_crop_around_and_moves_with_the_centre() -> None:
    img = np.arange(40 * 40, dtype=np.uint16).reshape(40, 40)
    for cx in np.arange(10.0, 14.0, 0.5):
        x0, y0 = g.crop_origin((cx, 20.0), 5)
        np.testing.assert_array_equal(g.crop_around(img, (cx, 20.0), 5), img[y0:y0 + 5, x0:x0 + 5])
    # moving the centre by one pixel moves the crop by one pixel (no half-to-even rounding)
    origins = [g.crop_origin((c, c), 5)[0] for c in (10.0, 11.0, 12.0, 13.0)]
    assert origins == [8, 9, 10, 11]
    # a one-pixel crop at a pixel's centre of mass is that pixel
    assert g.crop_origin((3.5, 5.5), 1) == (3, 5)
