"""Identity along tracks: one identity per animal per frame, smoothing over isolated wrong frames."""

from __future__ import annotations

import numpy as np
import pytest

from services.tracker.detections import detection_from_rle
from services.tracker.identity import IdentitySmoother, assign_identities
from services.tracker.options import TrackerOptions
from services.tracker.tracker import StreamTracker
from sipec.geometry import encode_rle
from sipec.serving.errors import InvalidInput

NAMES = ["mouse_a", "mouse_b", "mouse_c"]


def square(x: int, y: int) -> np.ndarray:
    m = np.zeros((100, 160), bool)
    m[y:y + 15, x:x + 15] = True
    return m


def two_animals(f: int) -> list:
    return [detection_from_rle(0, encode_rle(square(10 + f, 20))), detection_from_rle(1, encode_rle(square(100, 60)))]


def probs(*values: float) -> tuple[list[str], np.ndarray]:
    return NAMES, np.asarray(values)


def test_no_identity_is_used_twice_in_a_frame():
    tracker = StreamTracker()
    # IdNet says "mouse_a" for both animals; the first is more sure
    r = tracker.step(0, two_animals(0), [probs(0.9, 0.05, 0.05), probs(0.6, 0.3, 0.1)])
    ids = {t.index: t.identity for t in r.instances}
    assert ids == {0: "mouse_a", 1: "mouse_b"}
    assert r.instances[1].identity_confidence == pytest.approx(0.3)


def test_assignment_is_jointly_most_likely_and_leaves_extra_tracks_without_identity():
    out = assign_identities({7: np.array([0.5, 0.5]), 8: np.array([0.9, 0.1]), 9: np.array([0.45, 0.55])})
    assert {k: v.identity for k, v in out.items()} == {8: 0, 9: 1}   # track 7 is the least likely: no identity


def test_smoothing_fixes_isolated_wrong_frames():
    right, wrong = probs(0.1, 0.8, 0.1), probs(0.05, 0.05, 0.9)
    smoothed, raw = StreamTracker(TrackerOptions(identity_window=10)), StreamTracker(TrackerOptions(identity_window=1))
    for f in range(30):
        p = wrong if f in (12, 20) else right
        other = probs(0.8, 0.1, 0.1)
        for tracker, expect_fixed in ((smoothed, True), (raw, False)):
            r = tracker.step(f, two_animals(f), [p, other])
            got = r.instances[0].identity
            if f in (12, 20) and not expect_fixed:
                assert got == "mouse_c"         # without smoothing the wrong frame shows
            else:
                assert got == "mouse_b", f"frame {f}"
            assert r.instances[1].identity == "mouse_a"


def test_smoother_window_is_in_frames_and_bounded():
    s = IdentitySmoother(window=3)
    for f in range(10):
        s.add(1, f, np.array([1.0, 0.0]) if f < 8 else np.array([0.0, 1.0]))
    assert np.allclose(s.smoothed(1, 9), [1 / 3, 2 / 3])   # frames 7, 8, 9
    assert s.smoothed(1, 20) is None                      # nothing within the last 3 frames
    assert len(s._history[1]) == 3


def test_identity_input_is_checked():
    tracker = StreamTracker()
    with pytest.raises(InvalidInput, match="identities: 1 given for 2 instances"):
        tracker.step(0, two_animals(0), [probs(1, 0, 0)])
    with pytest.raises(InvalidInput, match=r"identities\[1\].values: 2 values, expected 3"):
        tracker.step(0, two_animals(0), [probs(1, 0, 0), (NAMES, np.array([0.5, 0.5]))])
    tracker.step(0, two_animals(0), [probs(1, 0, 0), probs(0, 1, 0)])
    with pytest.raises(InvalidInput, match=r"identities\[0\].names .* differ from this stream's identity names"):
        tracker.step(1, two_animals(1), [(["x", "y", "z"], np.array([1, 0, 0])), probs(0, 1, 0)])
    with pytest.raises(InvalidInput, match="finite and >= 0"):
        tracker.step(1, two_animals(1), [probs(np.nan, 0, 0), probs(0, 1, 0)])
    assert tracker.last_frame == 0
