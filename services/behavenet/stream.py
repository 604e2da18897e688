"""The per-stream state of ClassifyStream: one feature buffer per subject, windows n frames late.

A subject (a track "3" or an interacting pair "2+5") sends one crop per frame, in time order. Its
feature vectors go into a buffer; frame t can be classified once frame t+n has arrived (the window
[t-n, t+n] is non-causal). At the start the first frame's features stand in for the missing ones
(edge padding, as in training); when the subject ends (end_of_track, or the stream closes) its last
n frames are answered with the last frame's features standing in for the future. The buffer keeps
only the 2n+1 most recent feature vectors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np

from sipec.serving.errors import TooLarge

Ref = TypeVar("Ref")


@dataclass
class ReadyWindow(Generic[Ref]):
    """A frame whose window is complete: its reference, subject and (2n+1, F) features."""

    subject: str
    ref: Ref
    window: np.ndarray


class SubjectBuffer(Generic[Ref]):
    """The recent features of one subject and the frames not answered yet."""

    def __init__(self, subject: str, n: int) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        self.subject = subject
        self.n = n
        self._features: deque[np.ndarray] = deque()   # positions base .. base + len - 1
        self._refs: deque[Ref] = deque()              # refs of unanswered positions next_out ..
        self._base = 0        # position of _features[0]
        self._count = 0       # frames received
        self._next_out = 0    # position of the next frame to answer

    @property
    def received(self) -> int:
        return self._count

    @property
    def pending(self) -> int:
        return self._count - self._next_out

    def _feature(self, position: int) -> np.ndarray:
        position = min(max(position, 0), self._count - 1)   # edge padding at both ends
        return self._features[max(position, self._base) - self._base]

    def _window(self, t: int) -> np.ndarray:
        return np.stack([self._feature(p) for p in range(t - self.n, t + self.n + 1)])

    def add(self, ref: Ref, feature: np.ndarray) -> list[ReadyWindow[Ref]]:
        """Append one frame's features; return the frames whose window is now complete (at most one)."""
        self._features.append(np.asarray(feature, dtype=np.float32))
        self._refs.append(ref)
        self._count += 1
        out = []
        while self._next_out + self.n < self._count:
            out.append(ReadyWindow(self.subject, self._refs.popleft(), self._window(self._next_out)))
            self._next_out += 1
        self._trim()
        return out

    def flush(self) -> list[ReadyWindow[Ref]]:
        """Answer every pending frame (the last frame's features pad the future)."""
        out = []
        while self._next_out < self._count:
            out.append(ReadyWindow(self.subject, self._refs.popleft(), self._window(self._next_out)))
            self._next_out += 1
        return out

    def _trim(self) -> None:
        # the oldest position any future window needs is next_out - n (clamped at 0, kept as padding)
        keep_from = max(0, self._next_out - self.n)
        while self._base < keep_from and len(self._features) > 1:
            self._features.popleft()
            self._base += 1


class StreamState(Generic[Ref]):
    """All open subjects of one stream, at most `max_subjects` at a time."""

    def __init__(self, n: int, max_subjects: int) -> None:
        self.n = n
        self.max_subjects = max_subjects
        self.subjects: dict[str, SubjectBuffer[Ref]] = {}

    def check_room(self, subject: str, open_subjects: set[str] | None = None) -> None:
        """TooLarge (RESOURCE_EXHAUSTED) when `subject` is new and the stream already has the most it may hold.

        `open_subjects`: the subjects open at this point of a batch being checked ahead of `add`/`end`
        (default: those open now)."""
        subjects = self.subjects.keys() if open_subjects is None else open_subjects
        if subject not in subjects and len(subjects) >= self.max_subjects:
            raise TooLarge(f"subject {subject!r}: this stream already has {len(subjects)} open subjects, the "
                           f"limit per stream; end finished tracks with end_of_track or open another stream")

    def add(self, subject: str, ref: Ref, feature: np.ndarray) -> list[ReadyWindow[Ref]]:
        self.check_room(subject)
        buf = self.subjects.get(subject)
        if buf is None:
            buf = self.subjects[subject] = SubjectBuffer(subject, self.n)
        return buf.add(ref, feature)

    def end(self, subject: str) -> list[ReadyWindow[Ref]]:
        """Flush and forget one subject (nothing if it is not open)."""
        buf = self.subjects.pop(subject, None)
        return buf.flush() if buf is not None else []

    def end_all(self) -> list[ReadyWindow[Ref]]:
        out: list[ReadyWindow[Ref]] = []
        for subject in list(self.subjects):
            out += self.end(subject)
        return out
