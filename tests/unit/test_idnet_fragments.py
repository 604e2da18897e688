"""Fragments, global fragments and their accumulation (no network: training and prediction are stand-ins)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.idnet.accumulate import accumulate, assign_global
from services.idnet.fragments import find_fragments
from services.idnet.from_analysis import explain_no_global
from services.idnet.masking import MaskSettings, align_crop, long_axis_degrees, prepare_sequence
from sipec.geometry import animals_apart


def _rows(positions: dict[int, list[tuple[int, float, float]]], size: float = 10.0):
    """positions {frame: [(track, x, y)]} -> frame, track, boxes arrays."""
    frame, track, boxes = [], [], []
    for f, items in sorted(positions.items()):
        for t, x, y in items:
            frame.append(f)
            track.append(t)
            boxes.append((x - size / 2, y - size / 2, x + size / 2, y + size / 2))
    return np.array(frame), np.array(track), np.array(boxes, float)


def test_apart_is_false_for_both_of_two_meeting_boxes_only():
    frame = np.array([0, 0, 0, 1])
    boxes = np.array([[0, 0, 10, 10], [10.5, 0, 20, 10], [50, 50, 60, 60], [0, 0, 10, 10]], float)
    # widened by 10% of 10 px = 1 px each: boxes 0 and 1 (0.5 px apart) meet, box 2 and the lone box of frame 1 not
    assert animals_apart(frame, boxes, 0.1).tolist() == [False, False, True, True]
    assert animals_apart(frame, boxes, 0.0).tolist() == [True, True, True, True]


def _crossing_video():
    """3 animals for 30 frames; animals 1 and 2 meet in frames 10-12 (and the tracker gives them new ids after,
    as a tracker may); animal 3 is lost in frame 20."""
    pos = {}
    for f in range(30):
        a = (1, 20.0 + f, 20.0) if f < 13 else (4, 20.0 + f, 20.0)
        b = (2, 60.0 - 3 * f, 22.0) if f < 13 else (5, 50.0 + 3 * (f - 13), 22.0)
        items = [a, b]
        if f != 20:
            items.append((3, 200.0, 200.0 + f))
        pos[f] = items
    return pos


def test_fragments_break_where_animals_meet_or_a_track_is_missing_and_globals_span_the_cores():
    pos = _crossing_video()
    frame, track, boxes = _rows(pos)
    frags = find_fragments(frame, track, boxes, animals=3, margin=0.1, min_frames=3)
    by_track = {}
    for fr in frags.fragments:
        by_track.setdefault(fr.track, []).append((int(frame[fr.rows[0]]), int(frame[fr.rows[-1]])))
    meet = [f for f in range(30) if not animals_apart(frame[frame == f], boxes[frame == f], 0.1).all()]
    assert meet, "the two animals must meet somewhere"
    assert by_track[3] == [(0, 19), (21, 29)]
    for t in (1, 2):
        assert all(b < meet[0] for _, b in by_track[t])
    # cores: every frame with all 3 present and apart, cut at fragment changes; the longest comes first
    core_frames = sorted(f for g in frags.globals for f in range(g.first, g.last + 1))
    expected = [f for f in range(30) if f not in meet and f != 20 and len(pos[f]) == 3]
    assert core_frames == expected
    assert len(frags.globals) >= 3   # before the meeting, after it up to frame 19, after frame 20
    lengths = [g.length(frags.fragments) for g in frags.globals]
    assert lengths == sorted(lengths, reverse=True)
    for g in frags.globals:
        assert len(set(frags.fragments[f].track for f in g.fragments)) == 3
    assert frags.most_apart == 3


def test_no_global_fragment_is_explained_with_the_longest_stretch():
    frame, track, boxes = _rows(_crossing_video())
    frags = find_fragments(frame, track, boxes, animals=4)
    assert not frags.globals and frags.most_apart == 3
    msg = explain_no_global("OUT/v", frags, 4)
    a, b = frags.longest_core
    assert f"frames {a}-{b}" in msg and "at most 3 at once" in msg and b - a >= 5


def test_assign_global_accepts_a_confident_consistent_assignment_only():
    eye = np.eye(3) * 0.8 + 0.2 / 3
    probs = {10: eye[2], 11: eye[0], 12: eye[1]}
    assert assign_global((10, 11, 12), probs, {}, 3, 0.5) == {10: 2, 11: 0, 12: 1}
    # a labelled fragment keeps its identity; the others fill the rest
    assert assign_global((10, 11, 12), probs, {11: 0}, 3, 0.5) == {10: 2, 12: 1}
    # labelled fragment fixed to an identity the prediction gives another: the joint assignment moves the other
    assert assign_global((10, 11, 12), probs, {11: 2}, 3, 0.5) is None
    # not certain enough
    assert assign_global((10, 11, 12), {**probs, 12: np.array([0.3, 0.4, 0.3])}, {}, 3, 0.5) is None


def test_accumulation_labels_every_global_fragment_consistently_with_a_good_network():
    pos = _crossing_video()
    frame, track, boxes = _rows(pos)
    frags = find_fragments(frame, track, boxes, animals=3)
    # the animal behind each fragment (tracks 4, 5 continue animals 1, 2)
    animal = {fr.id: {1: 0, 4: 0, 2: 1, 5: 1, 3: 2}[fr.track] for fr in frags.fragments}
    calls = []

    def train(labels):
        calls.append(dict(labels))

    def predict(ids):
        labels = calls[-1]
        # the stand-in network learnt identity k = the animal of the first labelled fragment with label k
        name = {animal[f]: k for f, k in labels.items()}
        return {f: np.eye(3)[name[animal[f]]] * 0.9 + 0.1 / 3 for f in ids}

    acc = accumulate(frags, frame, 3, train, predict, rounds=3, min_certainty=0.5)
    assert sorted(acc.accepted) == list(range(len(frags.globals)))
    in_globals = {f for g in frags.globals for f in g.fragments}
    assert set(acc.labels) == in_globals
    mapping = {}
    for f, k in acc.labels.items():
        assert mapping.setdefault(animal[f], k) == k   # one label per animal: consistent
    assert len(set(mapping.values())) == 3
    # round 1 labels every other global fragment; training stops there (nothing pending for round 2)
    assert [r["accepted_globals"] for r in acc.rounds] == [1, len(frags.globals) - 1]
    assert len(calls) == 1


def test_accumulation_stops_at_the_first_global_when_the_network_knows_nothing():
    frame, track, boxes = _rows(_crossing_video())
    frags = find_fragments(frame, track, boxes, animals=3)
    acc = accumulate(frags, frame, 3, lambda labels: None, lambda ids: {f: np.ones(3) / 3 for f in ids},
                     rounds=3, min_certainty=0.5)
    assert acc.accepted == [0] and len(acc.labels) == 3 and acc.rounds[-1]["accepted_globals"] == 0
    with pytest.raises(ValueError, match="no global fragment"):
        accumulate(find_fragments(frame, track, boxes, animals=4), frame, 4, lambda labels: None,
                   lambda ids: {}, rounds=1)


def test_alignment_turns_the_long_axis_horizontal_and_old_models_keep_it_off():
    mask = np.zeros((64, 64), np.uint8)
    cv2.ellipse(mask, (32, 32), (24, 6), 35, 0, 360, 1, -1)
    assert long_axis_degrees(mask) == pytest.approx(35, abs=1.0)
    crop = np.dstack([mask * 200] * 3).astype(np.uint8)
    turned, turned_mask = align_crop(crop, mask.astype(bool))
    assert abs(long_axis_degrees(turned_mask)) < 1.0
    assert abs(int(turned_mask.sum()) - int(mask.sum())) < 0.05 * mask.sum()
    on = MaskSettings(64, 64, 0, 0, align=1)
    seq = prepare_sequence([crop], [mask.astype(bool)], on)
    ys, xs = np.nonzero(seq[0, ..., 0])
    assert xs.max() - xs.min() > 3 * (ys.max() - ys.min())   # lying down
    assert MaskSettings.from_json({"input_size": 64, "crop_px": 96, "base_px": 2, "step_px": 2}).align == 0
    assert MaskSettings.from_json(on.to_json()) == on
