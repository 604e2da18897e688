"""MOT metrics on a hand-worked example (boxes, IoU threshold 0.5).

Ground truth: objects A (left) and B (right) in frames 0-4; A is missing in frame 4.
Hypotheses: 1 on A and 2 on B in frames 0-1; swapped in frames 2-3 (1 on B, 2 on A); in frame 4
hypothesis 1 is on B and a spurious hypothesis 3 appears far from everything.

Frame by frame (CLEAR MOT):
  f0: A-1, B-2 (first matches, no switch)
  f1: A-1, B-2
  f2: A's last hypothesis 1 is now on B: A-2 and B-1 by the Hungarian step -> 2 switches
  f3: A-2, B-1 kept
  f4: B-1 kept; 3 is a false positive; A absent
  gt detections 9, hypothesis detections 10, matches 9, FN 0, FP 1, IDSW 2 -> MOTA = 1 - 3/9 = 2/3
IDF1: frames where pairs match: (A,1)=2, (A,2)=2, (B,2)=2, (B,1)=3. Best one-to-one: A-2 + B-1 = 5 = IDTP.
  IDF1 = 2*5 / (9 + 10) = 10/19, IDP = 5/10, IDR = 5/9.
"""

from __future__ import annotations

import pytest

from services.tracker.detections import detection_from_box
from sipec.mot import MotAccumulator

LEFT, RIGHT, FAR = (0, 0, 10, 10), (50, 0, 60, 10), (100, 100, 110, 110)


def box(b, dx=0.0):
    return detection_from_box(0, (b[0] + dx, b[1], b[2] + dx, b[3]))


def test_hand_worked_example():
    acc = MotAccumulator(iou_threshold=0.5)
    acc.update([("A", box(LEFT)), ("B", box(RIGHT))], [(1, box(LEFT, 1)), (2, box(RIGHT, -1))])
    acc.update([("A", box(LEFT)), ("B", box(RIGHT))], [(2, box(RIGHT)), (1, box(LEFT))])
    acc.update([("A", box(LEFT)), ("B", box(RIGHT))], [(1, box(RIGHT)), (2, box(LEFT))])
    acc.update([("A", box(LEFT)), ("B", box(RIGHT))], [(1, box(RIGHT)), (2, box(LEFT))])
    acc.update([("B", box(RIGHT))], [(1, box(RIGHT)), (3, box(FAR))])
    r = acc.result()
    assert (r.frames, r.gt_detections, r.hyp_detections) == (5, 9, 10)
    assert (r.matches, r.misses, r.false_positives, r.id_switches) == (9, 0, 1, 2)
    assert r.mota == pytest.approx(2 / 3)
    assert (r.idtp, r.idfp, r.idfn) == (5, 5, 4)
    assert r.idf1 == pytest.approx(10 / 19) and r.idp == pytest.approx(0.5) and r.idr == pytest.approx(5 / 9)
    assert (r.gt_tracks, r.hyp_tracks) == (2, 3)
    assert 0.8 < r.motp_iou <= 1.0             # two matches in frame 0 are shifted by one pixel (IoU 9/11)


def test_a_match_below_the_threshold_is_a_miss_and_a_false_positive():
    acc = MotAccumulator(iou_threshold=0.5)
    acc.update([("A", box(LEFT))], [(1, box(LEFT, 6))])    # IoU 4/16 = 0.25
    r = acc.result()
    assert (r.matches, r.misses, r.false_positives) == (0, 1, 1)
    assert r.mota == pytest.approx(-1.0) and r.idf1 == 0.0


def test_a_track_that_fragments_counts_one_switch():
    acc = MotAccumulator()
    for f in range(6):
        acc.update([("A", box(LEFT))], [(1 if f < 3 else 2, box(LEFT))])
    r = acc.result()
    assert r.id_switches == 1 and r.mota == pytest.approx(5 / 6)
    assert r.idf1 == pytest.approx(0.5)                      # 3 of 6 frames on the best hypothesis


def test_duplicate_ids_in_a_frame_are_refused():
    with pytest.raises(ValueError, match="occur more than once"):
        MotAccumulator().update([("A", box(LEFT))], [(1, box(LEFT)), (1, box(RIGHT))])
