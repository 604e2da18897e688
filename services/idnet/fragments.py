"""Fragments of a tracked video, for labelling identities without hand labels (idtracker.ai's idea).

A tracker keeps an animal's track id reliably while the animal is APART from the others; where animals touch or
cross, ids may swap. So each track is cut into INDIVIDUAL FRAGMENTS: maximal runs of consecutive frames in which
the track is present and apart from every other detection (`sipec.geometry.animals_apart`: widened boxes, then
masks). A GLOBAL FRAGMENT is a maximal run of consecutive frames in which exactly ``animals`` tracked instances are
present and all of them apart (a "core"), together with the individual fragments that span it: those fragments are
``animals`` different animals, which is what labels them without a human.

`find_fragments` works on plain arrays (one entry per result row), so it serves any tracker's output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sipec.geometry import animals_apart


@dataclass(frozen=True)
class Fragment:
    id: int
    track: int
    rows: np.ndarray          # row indices of the input arrays, in frame order

    def __len__(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class GlobalFragment:
    first: int                # first and last frame of the core (all animals present and apart)
    last: int
    fragments: tuple[int, ...]  # ids of the individual fragments spanning the core, one per animal

    def length(self, fragments: list[Fragment]) -> int:
        """Frames of its shortest individual fragment (how much each animal is seen, at least)."""
        return min(len(fragments[f]) for f in self.fragments)


@dataclass(frozen=True)
class Fragments:
    fragments: list[Fragment]
    globals: list[GlobalFragment]     # longest first
    fragment_of_row: np.ndarray       # (rows,) fragment id, -1 where the row is in none (untracked or not apart)
    most_apart: int                   # most tracked animals apart in one frame
    longest_core: tuple[int, int]     # (first, last) frame of the longest run with `most_apart` animals apart


def find_fragments(frame: np.ndarray, track: np.ndarray, boxes: np.ndarray, animals: int, margin: float = 0.1,
                   min_frames: int = 3, masks: Callable[[int], np.ndarray | None] | None = None) -> Fragments:
    """Individual and global fragments of one video's tracked rows (track 0 = untracked: never in a fragment,
    but it still keeps the animals it touches from being apart). Individual fragments shorter than `min_frames`
    are dropped, and with them the globals they span."""
    if animals < 1:
        raise ValueError(f"the number of animals must be at least 1, not {animals}")
    frame = np.asarray(frame, np.int64)
    track = np.asarray(track, np.int64)
    ok = animals_apart(frame, boxes, margin, masks) & (track > 0)
    fragment_of_row = np.full(len(frame), -1, np.int64)
    fragments: list[Fragment] = []
    for t in np.unique(track[ok]):
        rows = np.flatnonzero(ok & (track == t))
        rows = rows[np.argsort(frame[rows], kind="stable")]
        breaks = np.flatnonzero(np.diff(frame[rows]) != 1) + 1
        for run in np.split(rows, breaks):
            if len(run) >= min_frames:
                fragment_of_row[run] = len(fragments)
                fragments.append(Fragment(len(fragments), int(t), run))
    # cores: frames with exactly `animals` tracked rows, all of them in fragments
    tracked = track > 0
    frames = np.unique(frame[tracked]) if tracked.any() else np.zeros(0, np.int64)
    count = {int(f): 0 for f in frames}
    good = dict(count)
    members: dict[int, list[int]] = {int(f): [] for f in frames}
    apart_count = dict(count)
    for r in np.flatnonzero(tracked):
        f = int(frame[r])
        count[f] += 1
        apart_count[f] += int(ok[r])
        if fragment_of_row[r] >= 0:
            good[f] += 1
            members[f].append(int(fragment_of_row[r]))
    globals_: list[GlobalFragment] = []
    run: list[int] = []

    def close() -> None:
        if run:
            globals_.append(GlobalFragment(run[0], run[-1], tuple(sorted(members[run[0]]))))
            run.clear()

    for f in frames:
        f = int(f)
        core = count[f] == animals and good[f] == animals
        if core and run and (f != run[-1] + 1 or sorted(members[f]) != sorted(members[run[-1]])):
            close()
        if core:
            run.append(f)
        else:
            close()
    close()
    globals_.sort(key=lambda g: (-g.length(fragments), g.first))
    most = max(apart_count.values(), default=0)
    longest, best, start, prev = (0, -1), 0, None, None
    for f in frames:
        f = int(f)
        if apart_count[f] == most and most > 0:
            start = f if start is None or prev is None or f != prev + 1 else start
            prev = f
            if f - start + 1 > best:
                best, longest = f - start + 1, (start, f)
        else:
            start = prev = None
    return Fragments(fragments, globals_, fragment_of_row, most, longest)
