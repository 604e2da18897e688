"""Motion prediction (Kalman filter on the centre), re-identification within a gap, and a known number of animals.

Crafted masks: an animal faster than its own length per frame (no overlap between frames), two animals that
cross, a detector that misses an animal for a long stretch and adds false positives. The paper's matching
(`motion: none`) fragments these; `motion: kalman` and `animals: N` keep one track per animal.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from services.tracker.detections import detection_from_rle
from services.tracker.motion import CentreFilter
from services.tracker.options import TrackerOptions, resolve_options
from services.tracker.tracker import StreamTracker
from sipec.geometry import encode_rle
from sipec.serving.errors import InvalidInput

H, W = 200, 400


def blob(x: float, y: float, w: int = 16, h: int = 10) -> np.ndarray:
    m = np.zeros((H, W), bool)
    x0, y0 = int(round(x)), int(round(y))
    m[max(0, y0):y0 + h, max(0, x0):x0 + w] = True
    return m


def dets(*masks: np.ndarray) -> list:
    return [detection_from_rle(i, encode_rle(m)) for i, m in enumerate(masks)]


def ids(result) -> list[int]:
    return [t.track_id for t in sorted(result.instances, key=lambda t: t.index)]


def test_the_filter_learns_the_velocity_and_stops_extrapolating_after_a_few_frames():
    f = CentreFilter((10.0, 50.0), 0, size=12.0)
    for t in range(1, 8):
        f.update((10.0 + 20.0 * t, 50.0), t, 12.0)
    x, y = f.predict(8)
    assert abs(x - 170.0) < 2.0 and abs(y - 50.0) < 0.5 and abs(f.speed() - 20.0) < 1.0
    assert f.predict(100) == f.predict(7 + 5)          # at most 5 frames of constant velocity


def test_a_fast_animal_keeps_its_track_with_motion_and_fragments_without():
    """20 px per frame with a 16 px body: its masks never overlap from one frame to the next."""
    tracks = {}
    for motion in ("none", "kalman"):
        tracker = StreamTracker(TrackerOptions(motion=motion))
        seen = set()
        for t in range(15):
            seen.update(ids(tracker.step(t, dets(blob(10 + 20 * t, 40), blob(200, 150)))))
        tracks[motion] = len(seen)
    assert tracks["none"] == 16 and tracks["kalman"] == 2


def test_two_animals_crossing_keep_their_tracks():
    """Two animals run at each other on one line, overlap for 3 frames as one detection, and go on."""
    tracker = StreamTracker(TrackerOptions(motion="kalman"))
    first = None
    for t in range(21):
        a, b = 20 + 15 * t, 330 - 15 * t
        if abs(a - b) < 30:
            out = ids(tracker.step(t, dets(blob(min(a, b), 80, w=abs(a - b) + 16))))
        else:
            out = ids(tracker.step(t, dets(blob(a, 80), blob(b, 80))))
            if first is None:
                first = out
    assert out == first        # after the crossing, each animal carries the track it came in with


def test_known_number_of_animals_stitches_fragments_and_never_exceeds_it():
    """Animal 2 is missed for 60 frames and reappears far away; a false positive shows up while it is missed."""
    results = {}
    for animals in (0, 2):
        tracker = StreamTracker(TrackerOptions(animals=animals, max_lost_frames=10))
        seen = set()
        for t in range(100):
            masks = [blob(20 + t, 40)]
            if t < 20 or t >= 80:
                masks.append(blob(300 if t < 20 else 80, 150))
            if 40 <= t < 45:
                masks.append(blob(200, 100))             # a false positive while animal 2 is missed
            out = ids(tracker.step(t, dets(*masks)))
            seen.update(out)
        results[animals] = (seen - {0}, out, tracker.joined)
    assert len(results[0][0]) == 4                          # fragments: the false positive and a new track
    tracks, last, _ = results[2]
    assert tracks == {1, 2} and last == [1, 2]              # two animals, two tracks, whatever the detector did
    # a jump across the arena far beyond the distance gate: a new track, or with the known number the lost one
    for animals, expected in ((0, 3), (2, 2)):
        tracker = StreamTracker(TrackerOptions(animals=animals))
        for t in range(10):
            tracker.step(t, dets(blob(20, 40), blob(350, 150)))
        assert ids(tracker.step(12, dets(blob(20, 40), blob(30, 150)))) == [1, expected]
        assert tracker.joined == (1 if animals else 0)
    # extra instances beyond the known number get no track
    tracker = StreamTracker(TrackerOptions(animals=1))
    assert ids(tracker.step(0, dets(blob(20, 40), blob(200, 100)))) == [1, 0]


@pytest.mark.parametrize("animals", [0, 2])
def test_replaying_preset_tracks_restores_the_motion_state_exactly(animals):
    """A resume replays the written frames with their track ids (instances without a track left out, as
    `sipec analyze` does): the tracks that follow equal an uninterrupted run's, also with a known number of animals
    and a third, untracked instance in some frames."""
    frames = [[blob(10 + 18 * t, 40), blob(300 - 7 * t, 120), *([blob(200, 10)] if t % 3 == 0 else [])]
              for t in range(16)]
    options = TrackerOptions(animals=animals)
    full = StreamTracker(options)
    expected = [ids(full.step(t, dets(*m))) for t, m in enumerate(frames)]
    assert (0 in sum(expected, [])) == bool(animals)
    resumed = StreamTracker(options)
    for t in range(8):
        resumed.step(t, [dataclasses.replace(d, preset_track=k)
                         for d, k in zip(dets(*frames[t]), expected[t], strict=True) if k])
    assert [ids(resumed.step(t, dets(*frames[t]))) for t in range(8, 16)] == expected[8:]


def test_options_are_checked():
    assert resolve_options().motion == "kalman" and resolve_options().animals == 0
    assert resolve_options(motion="NONE", animals=8).animals == 8
    with pytest.raises(InvalidInput, match="options.motion"):
        resolve_options(motion="lstm")
    with pytest.raises(InvalidInput, match="options.animals"):
        resolve_options(animals=65)
    assert resolve_options(identity_evidence="Apart").identity_evidence == "apart"
    assert resolve_options().identity_evidence == "restart"
    with pytest.raises(InvalidInput, match="options.identity_evidence"):
        resolve_options(identity_evidence="vote")


def _identity_pass(evidence: str, positions: list[dict[int, float]], probs: list[dict[int, float]]) -> list[dict]:
    """Tracks preset (a second pass), 2 identities; positions {track: x} and P(identity "a") per track per frame.
    Returns {track: identity} per frame."""
    tracker = StreamTracker(resolve_options(animals=2, identity_evidence=evidence))
    out = []
    for f, (pos, p) in enumerate(zip(positions, probs, strict=True)):
        keys = sorted(pos)
        ds = [dataclasses.replace(d, preset_track=k) for d, k in zip(dets(*[blob(pos[k], 50) for k in keys]), keys,
                                                                       strict=True)]
        result = tracker.step(f, ds, [(["a", "b"], np.array([p[k], 1 - p[k]])) for k in keys])
        out.append({keys[t.index]: t.identity for t in result.instances})
    return out


@pytest.mark.parametrize("evidence", ["restart", "apart", "all"])
def test_identity_evidence_restarts_after_a_contact_and_a_gap(evidence):
    # frames 0-9 apart (track 1 looks like "a"); 10-12 the two touch (crops ambiguous); 13-15 apart again, but
    # track 1 now looks like "b": the tracks swapped animals in the contact
    far, near = {1: 100.0, 2: 300.0}, {1: 180.0, 2: 198.0}
    positions = [far] * 10 + [near] * 3 + [far] * 3
    probs = [{1: 0.9, 2: 0.1}] * 10 + [{1: 0.5, 2: 0.5}] * 3 + [{1: 0.2, 2: 0.8}] * 3
    got = _identity_pass(evidence, positions, probs)
    assert got[9] == {1: "a", 2: "b"}
    assert got[13] == ({1: "a", 2: "b"} if evidence == "all" else {1: "b", 2: "a"})
    # a gap: track 1 unseen in frames 10-11 and clearly "b" when it is back (all frames apart; track 2 as before,
    # so only a restarted track 1 outweighs track 2's long "b" history)
    positions = [far] * 10 + [{2: 300.0}] * 2 + [far] * 2
    probs = [{1: 0.9, 2: 0.1}] * 10 + [{2: 0.1}] * 2 + [{1: 0.02, 2: 0.1}] * 2
    got = _identity_pass(evidence, positions, probs)
    assert got[12][1] == ("a" if evidence == "all" else "b")
