"""Interactions: pairs whose dilated masks overlap, with their joint COM and crop box."""

from __future__ import annotations

import numpy as np
import pytest

from services.tracker.detections import detection_from_box, detection_from_rle
from services.tracker.interactions import find_interactions, masks_touch
from services.tracker.options import TrackerOptions
from services.tracker.tracker import StreamTracker
from sipec.geometry import encode_rle


def disk(cx: float, cy: float, r: float, shape=(120, 200)) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r


def test_dilated_masks_overlap_within_twice_the_dilation():
    # two disks of radius 10 whose edges are 10 pixels apart
    a = detection_from_rle(0, encode_rle(disk(50, 60, 10)))
    b = detection_from_rle(1, encode_rle(disk(80, 60, 10)))
    assert not masks_touch(a, b, 3)
    assert masks_touch(a, b, 6)
    # the boxes of these L-shaped masks overlap, the masks never come close
    la = np.zeros((120, 200), bool)
    la[10:60, 10:14] = True
    la[56:60, 10:60] = True
    lb = np.zeros((120, 200), bool)
    lb[14:20, 40:60] = True
    assert not masks_touch(detection_from_rle(0, encode_rle(la)), detection_from_rle(1, encode_rle(lb)), 4)


def test_interaction_event_has_pair_com_and_crop_box():
    a = detection_from_rle(0, encode_rle(disk(50, 60, 10)))
    b = detection_from_rle(1, encode_rle(disk(80, 60, 10)))
    (event,) = find_interactions([(5, b), (2, a)], dilation=6)
    assert (event.track_a, event.track_b) == (2, 5)
    assert event.com == pytest.approx((65.0, 60.0), abs=0.2)
    assert event.box == pytest.approx((a.box[0] - 6, a.box[1] - 6, b.box[2] + 6, b.box[3] + 6))
    # clipped to the frame
    c = detection_from_rle(2, encode_rle(disk(5, 5, 4)))
    d = detection_from_rle(3, encode_rle(disk(14, 5, 4)))
    (edge,) = find_interactions([(1, c), (2, d)], dilation=6)
    assert edge.box[0] == 0.0 and edge.box[1] == 0.0


def test_box_only_instances_use_grown_boxes():
    a, b = detection_from_box(0, (10, 10, 20, 20)), detection_from_box(1, (30, 10, 40, 20))
    assert masks_touch(a, b, 6) and not masks_touch(a, b, 5)   # a 10-pixel gap, as for masks


def test_tracker_reports_interactions_by_track():
    tracker = StreamTracker(TrackerOptions(interaction_dilation=6))
    far = tracker.step(0, [detection_from_rle(0, encode_rle(disk(30, 60, 10))),
                           detection_from_rle(1, encode_rle(disk(150, 60, 10)))])
    assert far.interactions == []
    near = tracker.step(1, [detection_from_rle(0, encode_rle(disk(150, 60, 10))),
                            detection_from_rle(1, encode_rle(disk(36, 60, 10))),
                            detection_from_rle(2, encode_rle(disk(170, 62, 10)))])
    assert [(e.track_a, e.track_b) for e in near.interactions] == [(2, 3)]
