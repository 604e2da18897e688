"""Per-track windows of IdentifyStream: each crop is answered once T later crops of its track have arrived.

Pure bookkeeping (no model): `TrackWindows.add` returns the centre items that became answerable, each with its
2T+1 context (missing context at a track's start or end repeats the nearest crop present, towards the centre).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class StreamItem:
    """One crop of one track: the S x S crop, its S x S mask (or None) and the caller's frame reference."""

    frame: Any
    crop: np.ndarray
    mask: np.ndarray | None


@dataclass
class ReadyItem:
    """A centre item with its context: `items[t]` is the one to identify."""

    track_id: int
    items: list[StreamItem]
    centre: StreamItem


@dataclass
class _Track:
    items: deque = field(default_factory=deque)   # kept context (at most T before the next centre) + pending
    next_centre: int = 0                           # index in `items` of the next unanswered item


class TrackWindows:
    """Windows of all open tracks of one stream."""

    def __init__(self, t: int, max_tracks: int) -> None:
        self.t = t
        self.max_tracks = max_tracks
        self.tracks: dict[int, _Track] = {}

    def can_open(self, track_id: int) -> bool:
        return track_id in self.tracks or len(self.tracks) < self.max_tracks

    def add(self, track_id: int, item: StreamItem) -> list[ReadyItem]:
        """Append a crop; the items now answerable (at most one: the one T crops back)."""
        tr = self.tracks.setdefault(track_id, _Track())
        tr.items.append(item)
        out = []
        while tr.next_centre + self.t < len(tr.items):
            out.append(self._ready(track_id, tr, tr.next_centre))
            tr.next_centre += 1
            self._trim(tr)
        return out

    def flush(self, track_id: int) -> list[ReadyItem]:
        """Answer every pending item of the track (future context padded) and forget the track."""
        tr = self.tracks.pop(track_id, None)
        if tr is None:
            return []
        return [self._ready(track_id, tr, c) for c in range(tr.next_centre, len(tr.items))]

    def flush_all(self) -> list[ReadyItem]:
        out: list[ReadyItem] = []
        for k in sorted(self.tracks):
            out += self.flush(k)
        return out

    def _ready(self, track_id: int, tr: _Track, c: int) -> ReadyItem:
        n = len(tr.items)
        ctx = [tr.items[min(max(c + o, 0), n - 1)] for o in range(-self.t, self.t + 1)]
        return ReadyItem(track_id, ctx, tr.items[c])

    def _trim(self, tr: _Track) -> None:
        while tr.next_centre > self.t:
            tr.items.popleft()
            tr.next_centre -= 1
