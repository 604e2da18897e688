"""Identities from global fragments, growing from the longest (idtracker.ai's accumulation, on IdNet).

1. The longest global fragment names the animals: its fragments become identities 0..N-1.
2. A network is trained on the labelled fragments' crops.
3. Every other global fragment is scored by it: each unlabelled fragment's mean probability vector over its crops.
   The fragments of one global fragment are N different animals, so they are assigned identities jointly
   (Hungarian on -log p, fragments already labelled fixed to theirs). The global fragment is ACCEPTED when the
   assignment is possible, each new fragment gets its own most probable identity with mean probability at least
   ``min_certainty``, and no new label collides with a labelled fragment of that identity overlapping it in time.
   Globals are visited longest first; labels accepted in a round count for the next global of the same round.
4. Repeat 2-3 while a round accepts something, at most ``rounds`` times.

`accumulate` takes the training and the prediction as functions, so the procedure is tested apart from a network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from services.idnet.fragments import Fragments

_EPS = 1e-9


@dataclass
class Accumulation:
    labels: dict[int, int]                          # fragment id -> identity index
    accepted: list[int]                             # indices into Fragments.globals, in acceptance order
    rounds: list[dict] = field(default_factory=list)

    def frames_labelled(self, fragments: Fragments) -> int:
        return sum(len(fragments.fragments[f]) for f in self.labels)


def _span(fragments: Fragments, frame: np.ndarray, f: int) -> tuple[int, int]:
    rows = fragments.fragments[f].rows
    return int(frame[rows[0]]), int(frame[rows[-1]])


def assign_global(fragment_ids: tuple[int, ...], probs: Mapping[int, np.ndarray], labels: Mapping[int, int],
                  animals: int, min_certainty: float) -> dict[int, int] | None:
    """New labels {fragment: identity} for one global fragment, or None when it is not accepted (see module)."""
    from scipy.optimize import linear_sum_assignment

    big = 1e6
    cost = np.zeros((len(fragment_ids), animals))
    for i, f in enumerate(fragment_ids):
        if f in labels:
            cost[i] = big
            cost[i, labels[f]] = 0.0
        else:
            cost[i] = -np.log(np.asarray(probs[f], np.float64) + _EPS)
    rows, cols = linear_sum_assignment(cost)
    if cost[rows, cols].max() >= big:
        return None
    new = {}
    for r, c in zip(rows, cols, strict=True):
        f = fragment_ids[r]
        if f in labels:
            continue
        p = np.asarray(probs[f])
        if int(np.argmax(p)) != int(c) or p[c] < min_certainty:
            return None
        new[f] = int(c)
    return new


def accumulate(fragments: Fragments, frame: np.ndarray, animals: int,
               train: Callable[[dict[int, int]], None],
               predict: Callable[[list[int]], dict[int, np.ndarray]],
               rounds: int = 4, min_certainty: float = 0.5) -> Accumulation:
    """Labels for the fragments of `fragments` (see the module). `train(labels)` fits the network on the labelled
    fragments; `predict(fragment ids)` gives each one's mean identity probabilities under the last fit."""
    if not fragments.globals:
        raise ValueError("no global fragment: nowhere are all animals tracked apart")
    first = fragments.globals[0]
    result = Accumulation({f: i for i, f in enumerate(first.fragments)}, [0])
    result.rounds.append({"round": 0, "accepted_globals": 1, "labelled_fragments": len(result.labels),
                          "labelled_frames": result.frames_labelled(fragments)})
    spans = {f: _span(fragments, frame, f) for f in range(len(fragments.fragments))}
    for r in range(1, rounds + 1):
        pending = [g for g in range(len(fragments.globals)) if g not in result.accepted]
        if not pending:
            break
        train(dict(result.labels))
        unlabelled = sorted({f for g in pending for f in fragments.globals[g].fragments} - set(result.labels))
        probs = predict(unlabelled) if unlabelled else {}
        accepted = 0
        for g in pending:
            new = assign_global(fragments.globals[g].fragments, probs, result.labels, animals, min_certainty)
            if new is None or _collides(new, result.labels, spans):
                continue
            result.labels.update(new)
            result.accepted.append(g)
            accepted += int(bool(new))   # a global fragment labelled already through others adds nothing to learn
        result.rounds.append({"round": r, "accepted_globals": accepted, "labelled_fragments": len(result.labels),
                              "labelled_frames": result.frames_labelled(fragments)})
        if not accepted:
            break
    return result


def _collides(new: Mapping[int, int], labels: Mapping[int, int], spans: Mapping[int, tuple[int, int]]) -> bool:
    """Whether a new label gives an identity to a fragment overlapping in time a labelled fragment of it."""
    by_identity: dict[int, list[tuple[int, int]]] = {}
    for f, i in labels.items():
        by_identity.setdefault(i, []).append(spans[f])
    for f, i in new.items():
        a, b = spans[f]
        if any(a <= d and c <= b for c, d in by_identity.get(i, ())):
            return True
    return False
