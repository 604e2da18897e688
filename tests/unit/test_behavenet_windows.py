"""BehaveNet temporal windows and the streaming buffers: edge padding, n-frame delay, flush."""

from __future__ import annotations

import numpy as np
import pytest

from services.behavenet.stream import StreamState, SubjectBuffer
from services.behavenet.windows import sequence_window_indices, window_indices, window_size, windows
from sipec.serving.errors import TooLarge


def test_window_indices_pad_with_the_edge_frames():
    idx = window_indices(5, 2)
    assert idx.shape == (5, 5)
    assert idx[0].tolist() == [0, 0, 0, 1, 2]
    assert idx[2].tolist() == [0, 1, 2, 3, 4]
    assert idx[4].tolist() == [2, 3, 4, 4, 4]
    assert window_indices(1, 3).tolist() == [[0] * 7]
    assert window_indices(0, 2).shape == (0, 5)
    assert window_size(10) == 21
    with pytest.raises(ValueError, match="n must be >= 0"):
        window_size(-1)


def test_windows_of_a_feature_sequence():
    feats = np.arange(12, dtype=np.float32).reshape(4, 3)  # frame t has features [3t, 3t+1, 3t+2]
    w = windows(feats, 1)
    assert w.shape == (4, 3, 3)
    np.testing.assert_array_equal(w[0], feats[[0, 0, 1]])
    np.testing.assert_array_equal(w[3], feats[[2, 3, 3]])
    with pytest.raises(ValueError, match=r"\(T, F\)"):
        windows(np.zeros(3), 1)


def test_sequence_windows_never_cross_into_the_next_sequence():
    idx = sequence_window_indices(np.array([0, 3]), np.array([3, 2]), 2)
    assert idx.shape == (5, 5)
    assert idx[2].tolist() == [0, 1, 2, 2, 2]          # last of the first sequence: padded with itself
    assert idx[3].tolist() == [3, 3, 3, 4, 4]          # first of the second: padded with itself
    assert set(idx[:3].ravel()) <= {0, 1, 2} and set(idx[3:].ravel()) <= {3, 4}


@pytest.mark.parametrize("length", [1, 2, 3, 7, 20])
@pytest.mark.parametrize("n", [0, 1, 3])
def test_stream_buffer_answers_n_frames_late_with_the_offline_windows(length, n):
    rng = np.random.default_rng(length * 10 + n)
    feats = rng.normal(size=(length, 4)).astype(np.float32)
    expected = windows(feats, n)
    buf: SubjectBuffer[int] = SubjectBuffer("3", n)
    answered: list[tuple[int, int]] = []   # (frame answered, frames received at that moment)
    got = {}
    for t in range(length):
        for ready in buf.add(t, feats[t]):
            answered.append((ready.ref, t + 1))
            got[ready.ref] = ready.window
    # frame t is answered when frame t+n arrives, never earlier
    assert all(received == ref + n + 1 for ref, received in answered)
    assert buf.pending == min(n, length)
    for ready in buf.flush():
        got[ready.ref] = ready.window
    assert sorted(got) == list(range(length)) and buf.pending == 0
    for t in range(length):
        np.testing.assert_array_equal(got[t], expected[t])
    assert len(buf._features) <= 2 * n + 1   # only what future windows need is kept


def test_stream_state_interleaves_subjects_and_limits_open_ones():
    state: StreamState[tuple[str, int]] = StreamState(n=1, max_subjects=2)
    out = []
    for t in range(3):
        for subject in ("1", "2+5"):
            out += [(r.subject, r.ref) for r in state.add(subject, (subject, t), np.full(2, t, np.float32))]
    assert out == [("1", ("1", 0)), ("2+5", ("2+5", 0)), ("1", ("1", 1)), ("2+5", ("2+5", 1))]
    with pytest.raises(TooLarge, match="2 open subjects"):
        state.add("7", ("7", 0), np.zeros(2, np.float32))
    flushed = state.end("1")
    assert [(r.subject, r.ref) for r in flushed] == [("1", ("1", 2))]
    np.testing.assert_array_equal(flushed[0].window[:, 0], [1, 2, 2])   # the last frame pads the future
    state.add("7", ("7", 0), np.zeros(2, np.float32))                     # room again after end_of_track
    assert state.end("unknown") == []
    assert sorted(r.subject for r in state.end_all()) == ["2+5", "7"]
    assert state.subjects == {}


def test_one_batch_of_stream_requests_admits_subjects_in_request_order():
    """A batch read ahead as a whole behaves as if its requests came one by one: an end_of_track early in the
    batch makes room for a new subject later in it, and two new subjects cannot both take the last place."""
    from services.behavenet.service import BehaveNetService, ServingConfig
    from sipec.api.convert import image_to_proto
    from sipec.v1 import behavenet_pb2, common_pb2

    svc = BehaveNetService.__new__(BehaveNetService)   # no backends: features and windows faked below
    svc.max_subjects, svc.max_crop_pixels = 2, 1 << 20
    svc._features = lambda crops: np.zeros((len(crops), 4), np.float32)
    svc._probabilities = lambda w: (np.tile([0.75, 0.25], (len(w), 1)).astype(np.float32), 1)
    cfg = ServingConfig(n=0, classes=["rest", "walk"], input_size=8, feature_size=4, version=1)
    crop = image_to_proto(np.zeros((8, 8, 3), np.uint8))

    def frame(subject: str, index: int, end: bool = False, with_crop: bool = True) -> object:
        return behavenet_pb2.BehaviourFrame(frame=common_pb2.FrameRef(index=index), subject=subject,
                                            crop=crop if with_crop else None, end_of_track=end)

    state: StreamState = StreamState(n=0, max_subjects=2)

    def process(batch: list) -> list[tuple[str, int, int]]:
        return sorted((r.subject, r.frame.index, r.error.code if r.HasField("error") else 0)
                      for r in svc._process(batch, state, cfg))

    assert process([frame("a", 0), frame("b", 0)]) == [("a", 0, 0), ("b", 0, 0)]
    exhausted = 8   # RESOURCE_EXHAUSTED
    got = process([frame("c", 0),                                        # c: a third subject, refused
                   frame("a", 1, end=True, with_crop=False), frame("c", 1),  # a ended: room for c
                   frame("d", 1)])                                       # the last place is c's: d refused
    assert got == [("c", 0, exhausted), ("c", 1, 0), ("d", 1, exhausted)]
    assert sorted(state.subjects) == ["b", "c"]
