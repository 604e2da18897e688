"""IdentifyStream bookkeeping: T-frame delay, edge padding, flush, and the training-side sequence indices."""

from __future__ import annotations

import numpy as np

from services.idnet.data import CropSet
from services.idnet.stream import StreamItem, TrackWindows


def _item(i: int) -> StreamItem:
    return StreamItem(frame=i, crop=np.full((4, 4, 3), i, np.uint8), mask=None)


def test_answers_t_frames_later_with_edge_padding_and_flush() -> None:
    w = TrackWindows(t=2, max_tracks=4)
    assert w.add(1, _item(0)) == [] and w.add(1, _item(1)) == []
    ready = w.add(1, _item(2))
    assert [r.centre.frame for r in ready] == [0]
    assert [it.frame for it in ready[0].items] == [0, 0, 0, 1, 2]
    ready = w.add(1, _item(3))
    assert [it.frame for it in ready[0].items] == [0, 0, 1, 2, 3]
    ready = w.add(1, _item(4))
    assert [it.frame for it in ready[0].items] == [0, 1, 2, 3, 4]
    flushed = w.flush(1)
    assert [r.centre.frame for r in flushed] == [3, 4]
    assert [it.frame for it in flushed[1].items] == [2, 3, 4, 4, 4]
    assert w.flush(1) == [] and w.tracks == {}


def test_tracks_are_independent_and_limited() -> None:
    w = TrackWindows(t=1, max_tracks=2)
    w.add(1, _item(0))
    w.add(2, _item(10))
    assert not w.can_open(3) and w.can_open(2)
    assert [r.centre.frame for r in w.add(2, _item(11))] == [10]
    assert [(r.track_id, r.centre.frame) for r in w.flush_all()] == [(1, 0), (2, 11)]


def test_t0_answers_at_once() -> None:
    w = TrackWindows(t=0, max_tracks=1)
    assert [r.centre.frame for r in w.add(5, _item(7))] == [7]


def test_training_sequences_match_stream_padding() -> None:
    n = 5
    data = CropSet(["a"], np.zeros((n, 4, 4, 3), np.uint8), np.ones((n, 4, 4), bool), np.zeros(n, bool),
                   np.zeros(n, np.int64), np.ones(n, np.int64), np.array([0, 1, 2, 4, 5]), np.zeros(n, np.int64))
    idx = data.sequence_indices(2)
    # track starts: the past repeats the first crop (as the stream's edge padding does)
    assert idx[0].tolist() == [0, 0, 0, 1, 2]
    # frame 3 is missing: its slot repeats the nearest present crop towards the centre
    assert idx[2].tolist() == [0, 1, 2, 2, 3]
    assert idx[3].tolist() == [2, 3, 3, 4, 4]
