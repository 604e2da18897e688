"""Tracker matching on crafted masks: crossing animals, hidden animals and the look-back, new animals,
greedy vs Hungarian, frame order, the bound on tracks."""

from __future__ import annotations

import numpy as np
import pytest

from services.tracker.detections import detection_from_box, detection_from_rle
from services.tracker.matching import greedy_assignment, hungarian_assignment
from services.tracker.options import TrackerLimits, TrackerOptions, resolve_options
from services.tracker.tracker import StreamTracker
from sipec.geometry import encode_rle, region_iou_matrix
from sipec.serving.errors import InvalidInput, TooLarge

H, W = 120, 200


def rect(x: int, y: int, w: int = 24, h: int = 12, minus: np.ndarray | None = None) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[max(0, y):y + h, max(0, x):x + w] = True
    if minus is not None:
        m &= ~minus
    return m


def dets(*masks: np.ndarray) -> list:
    return [detection_from_rle(i, encode_rle(m)) for i, m in enumerate(masks)]


def track_ids(result) -> list[int]:
    return [t.track_id for t in sorted(result.instances, key=lambda t: t.index)]


@pytest.mark.parametrize("matching", ["greedy", "hungarian"])
def test_crossing_animals_keep_their_tracks(matching):
    """A walks right over B walking left; B's visible mask is cut by A while they overlap."""
    tracker = StreamTracker(TrackerOptions(matching=matching))
    a_tracks, b_tracks = set(), set()
    for f in range(40):
        a = rect(10 + 4 * f, 50)
        b = rect(170 - 4 * f, 56, minus=a)          # A is on top
        order = (a, b) if f % 2 else (b, a)         # the detector's order changes from frame to frame
        result = tracker.step(f, dets(*order))
        ids = track_ids(result)
        assert len(set(ids)) == 2                   # one instance per track
        a_tracks.add(ids[0] if f % 2 else ids[1])
        b_tracks.add(ids[1] if f % 2 else ids[0])
    assert len(a_tracks) == 1 and len(b_tracks) == 1 and a_tracks != b_tracks
    assert tracker.live_tracks == 2


def test_hidden_within_look_back_keeps_track_and_beyond_gets_a_new_one():
    tracker = StreamTracker(TrackerOptions(max_lost_frames=5))
    b_moves = [rect(20 + 2 * f, 80) for f in range(40)]
    f = 0
    for f in range(5):                                  # A and B visible
        tracker.step(f, dets(rect(120, 20), b_moves[f]))
    for f in range(5, 10):                              # A hidden under an object for 5 frames
        assert track_ids(tracker.step(f, dets(b_moves[f]))) == [2]
    r = tracker.step(10, dets(rect(123, 21), b_moves[10]))  # reappears nearby, 5 frames missing: kept
    assert track_ids(r) == [1, 2] and r.new_tracks == []
    for f in range(11, 17):                             # hidden for 6 frames: beyond the look-back
        tracker.step(f, dets(b_moves[f]))
    r = tracker.step(17, dets(rect(123, 21), b_moves[17]))
    assert track_ids(r) == [3, 2] and r.new_tracks == [3]
    assert 1 not in tracker.tracks                      # the old track was forgotten (bounded state)


def test_new_animal_gets_a_new_track():
    tracker = StreamTracker()
    tracker.step(0, dets(rect(10, 10)))
    r = tracker.step(1, dets(rect(11, 10), rect(150, 90)))
    assert track_ids(r) == [1, 2] and r.new_tracks == [2]


def test_greedy_vs_hungarian_on_a_crafted_iou_matrix():
    iou = np.array([[0.9, 0.8], [0.8, 0.1]])
    assert greedy_assignment(iou, 0.05) == [(0, 0), (1, 1)]          # largest IoU first: total 1.0
    assert hungarian_assignment(iou, 0.05) == [(0, 1), (1, 0)]       # best total: 1.6
    assert greedy_assignment(iou, 0.2) == [(0, 0)]                   # row 1's only option is below min_iou
    # ties go to the track seen most recently
    assert greedy_assignment(np.array([[0.5, 0.5]]), 0.1, recency=np.array([3.0, 1.0])) == [(0, 1)]


def test_iou_is_the_true_mask_iou_and_box_iou_without_masks():
    a, b = rect(10, 10, 20, 10), rect(20, 10, 20, 10)
    iou = region_iou_matrix(dets(a), dets(b))
    assert iou[0, 0] == pytest.approx(100 / 300)
    boxes = region_iou_matrix([detection_from_box(0, (10, 10, 30, 20))], [detection_from_box(0, (20, 10, 40, 20))])
    assert boxes[0, 0] == pytest.approx(100 / 300)


def test_out_of_order_frame_is_refused_and_changes_nothing():
    tracker = StreamTracker()
    tracker.step(3, dets(rect(10, 10)))
    for bad in (3, 2):
        with pytest.raises(InvalidInput, match="frame.index .* not after the previous frame 3"):
            tracker.step(bad, dets(rect(100, 80)))
    assert tracker.live_tracks == 1 and tracker.last_frame == 3
    assert track_ids(tracker.step(4, dets(rect(11, 10)))) == [1]


def test_bound_on_live_tracks():
    tracker = StreamTracker(limits=TrackerLimits(max_tracks=2))
    tracker.step(0, dets(rect(10, 10), rect(100, 10)))
    with pytest.raises(TooLarge, match="max_tracks=2"):
        tracker.step(1, dets(rect(10, 10), rect(100, 10), rect(50, 80)))
    assert tracker.live_tracks == 2 and tracker.last_frame == 0       # the refused frame changed nothing
    assert track_ids(tracker.step(2, dets(rect(11, 10), rect(101, 10)))) == [1, 2]


def test_frame_size_must_stay_the_same():
    tracker = StreamTracker()
    tracker.step(0, dets(rect(10, 10)))
    other = detection_from_rle(0, encode_rle(np.ones((60, 80), bool)))
    with pytest.raises(InvalidInput, match=r"instances\[0\].mask is 80x60"):
        tracker.step(1, [other])


def test_box_only_instances_are_tracked_by_box_iou():
    tracker = StreamTracker()
    for f in range(5):
        boxes = [detection_from_box(0, (10 + f, 10, 40 + f, 30)), detection_from_box(1, (100, 50, 130, 70))]
        r = tracker.step(f, boxes)
        assert track_ids(r) == [1, 2]


def test_options_are_checked():
    assert resolve_options().matching == "hungarian"
    with pytest.raises(InvalidInput, match="options.matching"):
        resolve_options(matching="nearest")
    with pytest.raises(InvalidInput, match="options.max_lost_frames"):
        resolve_options(max_lost_frames=10_000)
    with pytest.raises(InvalidInput, match="options.min_iou"):
        resolve_options(min_iou=1.5)


def test_distance_stage_resumes_an_animal_that_reappears_elsewhere():
    """Hidden for 4 frames, the animal reappears 30 pixels away: no mask overlap with its last appearance."""
    results = {}
    for motion, max_distance in (("none", 0.0), ("none", 40.0), ("kalman", 0.0), ("kalman", 20.0)):
        tracker = StreamTracker(TrackerOptions(max_lost_frames=10, max_distance=max_distance, motion=motion))
        for f in range(3):
            tracker.step(f, dets(rect(40, 20), rect(150, 90)))
        for f in range(3, 7):
            tracker.step(f, dets(rect(150, 90)))
        results[motion, max_distance] = track_ids(tracker.step(7, dets(rect(70, 20), rect(150, 90))))
        # a new animal far from every lost track still gets a new track
        assert track_ids(tracker.step(8, dets(rect(71, 20), rect(150, 90), rect(5, 100))))[2] == max(
            results[motion, max_distance]) + 1
    assert results["none", 0.0] == [3, 2]       # IoU only (the paper): a new track
    assert results["none", 40.0] == [1, 2]      # the second stage finds the lost track 30 pixels away
    # motion: the automatic gate (a body length, 24 px for the 24 x 12 mask, plus 3 standard deviations of the
    # predicted centre, which grow over the 5 frames lost) finds it too; a
    # fixed max_distance replaces the automatic gate
    assert results["kalman", 0.0] == [1, 2] and results["kalman", 20.0] == [3, 2]
    with pytest.raises(InvalidInput, match="options.max_distance"):
        resolve_options(max_distance=-1.0)


def test_preset_track_ids_skip_matching_for_a_second_identity_pass():
    """A client that already knows the tracks (identity smoothing after IdNet's delayed answers) presets them."""
    import dataclasses

    from services.tracker.detections import detection_from_box
    from services.tracker.tracker import StreamTracker

    first = StreamTracker()
    a = detection_from_box(0, (0, 0, 10, 10))
    b = detection_from_box(1, (50, 50, 60, 60))
    r0 = first.step(0, [a, b])
    ids = [t.track_id for t in r0.instances]
    second = StreamTracker()
    # the second pass swaps the instance order and presets the ids: they are kept, not re-matched
    pa = dataclasses.replace(b, index=0, preset_track=ids[1])
    pb = dataclasses.replace(a, index=1, preset_track=ids[0])
    r1 = second.step(0, [pa, pb], [(["x", "y"], [0.9, 0.1]), (["x", "y"], [0.2, 0.8])])
    assert [t.track_id for t in r1.instances] == [ids[1], ids[0]]
    assert [t.identity for t in r1.instances] == ["x", "y"]
    # a fresh instance in the same stream gets a new id above the preset ones
    r2 = second.step(1, [dataclasses.replace(a, preset_track=0)])
    assert r2.instances[0].track_id == ids[0]  # matched to the preset track by IoU
    r3 = second.step(2, [detection_from_box(0, (200, 200, 210, 210))])
    assert r3.instances[0].track_id > max(ids)
    import pytest

    from sipec.serving.errors import InvalidInput

    with pytest.raises(InvalidInput, match="same track_id"):
        second.step(3, [dataclasses.replace(a, preset_track=5), dataclasses.replace(b, preset_track=5)])
