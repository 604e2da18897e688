"""Detection scores in the tracker: ByteTrack's second pass over low-score instances, the new-track score (fixed or
automatic from the scores of the tracked animals), and the gate scaled by the animal's length.

Crafted masks and scores; the same options through the gRPC contract are in test_tracker_service_unit.py, the
pipeline side (SegNet asked down to low_score, left-over low instances dropped) in test_pipeline_scores.py.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.tracker.detections import detection_from_rle
from services.tracker.options import TrackerOptions, resolve_options
from services.tracker.tracker import BIRTH_MIN_SAMPLES, StreamTracker
from sipec.geometry import encode_rle
from sipec.serving.errors import InvalidInput

H, W = 200, 400


def blob(x: float, y: float, w: int = 16, h: int = 10) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[int(y):int(y) + h, int(x):int(x) + w] = True
    return m


def det(i: int, mask: np.ndarray, score: float) -> object:
    return dataclasses.replace(detection_from_rle(i, encode_rle(mask)), score=score)


def ids(result) -> list[int]:
    return [t.track_id for t in sorted(result.instances, key=lambda t: t.index)]


def test_a_low_score_instance_continues_its_track_but_never_starts_one():
    tr = StreamTracker(TrackerOptions(min_score=0.5))
    assert ids(tr.step(0, [det(0, blob(50, 50), 0.9)])) == [1]
    # the animal's score drops (partly hidden): it keeps its track; a low-score blob elsewhere gets none
    r = tr.step(1, [det(0, blob(52, 50), 0.3), det(1, blob(300, 150), 0.3)])
    assert ids(r) == [1, 0] and r.new_tracks == []
    assert ids(tr.step(2, [det(0, blob(54, 50), 0.9)])) == [1]
    # without the line (min_score 0, the default) every instance is high: the blob starts a track
    plain = StreamTracker(TrackerOptions())
    plain.step(0, [det(0, blob(50, 50), 0.9)])
    assert ids(plain.step(1, [det(0, blob(52, 50), 0.3), det(1, blob(300, 150), 0.3)])) == [1, 2]


def test_the_second_pass_needs_real_overlap():
    # a low-score instance near a lost track but hardly overlapping it does not take it (ByteTrack: IoU >= 0.5)
    tr = StreamTracker(TrackerOptions(min_score=0.5))
    tr.step(0, [det(0, blob(50, 50), 0.9)])
    assert ids(tr.step(1, [det(0, blob(62, 50), 0.3)])) == [0]
    # the same instance scored high is matched (distance stage)
    tr = StreamTracker(TrackerOptions(min_score=0.5))
    tr.step(0, [det(0, blob(50, 50), 0.9)])
    assert ids(tr.step(1, [det(0, blob(62, 50), 0.9)])) == [1]


def _two_animals_tracked(tr: StreamTracker, frames: int, score: float = 0.95) -> None:
    for f in range(frames):
        tr.step(f, [det(0, blob(50 + f % 3, 50), score), det(1, blob(300, 150 - f % 3), score)])


def test_the_automatic_new_track_score_follows_the_tracked_animals_scores():
    tr = StreamTracker(TrackerOptions(min_score=0.3))
    assert tr.new_track_score() == 0.3                 # nothing known yet: min_score
    frames = BIRTH_MIN_SAMPLES // 2 + 2                # two continuing instances a frame
    _two_animals_tracked(tr, frames)
    assert tr.new_track_score() == pytest.approx(0.95)
    # a doubtful extra detection does not start a track; one scored like the animals does
    r = tr.step(frames, [det(0, blob(51, 50), 0.95), det(1, blob(300, 149), 0.95), det(2, blob(150, 100), 0.6)])
    assert ids(r) == [1, 2, 0] and r.new_tracks == []
    r = tr.step(frames + 1, [det(0, blob(52, 50), 0.95), det(1, blob(300, 148), 0.95), det(2, blob(150, 100), 0.96)])
    assert ids(r) == [1, 2, 3] and r.new_tracks == [3]


def test_a_fixed_new_track_score_and_the_first_frames():
    tr = StreamTracker(TrackerOptions(new_track_score=0.5))
    _two_animals_tracked(tr, BIRTH_MIN_SAMPLES)
    assert tr.new_track_score() == 0.5
    r = tr.step(BIRTH_MIN_SAMPLES, [det(0, blob(150, 100), 0.6)])
    assert r.new_tracks == [3]
    # before enough tracked instances, any instance at min_score may start a track (the first frames)
    tr = StreamTracker(TrackerOptions())
    assert ids(tr.step(0, [det(0, blob(50, 50), 0.1), det(1, blob(300, 150), 0.9)])) == [1, 2]


def test_a_detector_without_scores_tracks_as_before():
    # clients that send no score (0 in the proto) with min_score 0: every instance starts and continues tracks
    tr = StreamTracker(TrackerOptions())
    for f in range(BIRTH_MIN_SAMPLES):
        assert ids(tr.step(f, [det(0, blob(50 + f % 3, 50), 0.0)])) == [1]
    assert ids(tr.step(BIRTH_MIN_SAMPLES, [det(0, blob(50, 50), 0.0), det(1, blob(300, 150), 0.0)])) == [1, 2]


def test_with_a_known_number_of_animals_a_doubtful_instance_joins_a_lost_track_instead_of_starting_one():
    tr = StreamTracker(TrackerOptions(animals=3))
    _two_animals_tracked(tr, BIRTH_MIN_SAMPLES)
    f = BIRTH_MIN_SAMPLES
    r = tr.step(f, [det(0, blob(51, 50), 0.95), det(1, blob(300, 149), 0.95), det(2, blob(150, 100), 0.5)])
    assert ids(r) == [1, 2, 0]                         # room for a third, but it does not score like an animal
    r = tr.step(f + 1, [det(0, blob(52, 50), 0.95), det(1, blob(300, 148), 0.95), det(2, blob(150, 100), 0.97)])
    assert ids(r) == [1, 2, 3]


def test_the_gate_scales_with_the_animals_length_not_its_area():
    # a long thin animal (60 x 6 px: sqrt(area) 19 px) that darts 56 px along its body: within one length, and
    # too far for its moved box to overlap
    tr = StreamTracker(TrackerOptions())
    x = 40.0
    for f in range(6):
        tr.step(f, [det(0, blob(x, 100, w=60, h=6), 0.9)])
        x += 2
    assert ids(tr.step(6, [det(0, blob(x + 56, 100, w=60, h=6), 0.9)])) == [1]


@pytest.mark.parametrize("field,value", [("min_score", 1.5), ("min_score", float("nan")), ("new_track_score", -0.1)])
def test_bad_scores_are_refused_naming_the_field(field, value):
    with pytest.raises(InvalidInput, match=f"options.{field} must be in"):
        resolve_options(**{field: value})
