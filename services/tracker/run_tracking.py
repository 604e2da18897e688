"""Tracking a whole video offline and scoring it against ground-truth tracks.

`track_ground_truth` feeds the ground truth's own instances to a :class:`StreamTracker` as detections
(ids removed, order shuffled in every frame: "oracle detections", so the score is the tracker's alone),
optionally with SIMULATED IdNet probabilities. `score_tracks` computes the MOT metrics twice: with the
track ids as hypotheses (mask tracking alone) and with the assigned identity names as hypotheses (what
the tracker reports as "who"), plus the identity accuracy: the share of ground-truth instances matched
(IoU >= threshold) to a tracked instance carrying their own identity name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from services.tracker.data import GroundTruth, TrackedInstance
from services.tracker.options import TrackerLimits, TrackerOptions
from services.tracker.simulated_idnet import SimulatedIdNet
from services.tracker.tracker import StreamTracker
from sipec.geometry import region_iou_matrix
from sipec.mot import MotAccumulator, MotResult


def track_ground_truth(gt: GroundTruth, options: TrackerOptions, idnet: SimulatedIdNet | None = None,
                       seed: int = 0, limits: TrackerLimits | None = None) -> list[TrackedInstance]:
    """Run the tracker over the ground truth's instances (shuffled, without ids)."""
    rng = np.random.default_rng(seed)
    tracker = StreamTracker(options, limits)
    out: list[TrackedInstance] = []
    for fr in gt.frames:
        order = rng.permutation(len(fr.objects))
        dets = [replace(fr.objects[k][1], index=i) for i, k in enumerate(order)]
        identities = None
        if idnet is not None:
            identities = [(idnet.names, idnet.probabilities(fr.objects[k][0], fr.identities[k])) for k in order]
        result = tracker.step(fr.frame, dets, identities)
        for t in result.instances:
            out.append(TrackedInstance(fr.frame, t.track_id, dets[t.index], t.identity, t.identity_confidence))
    return out


@dataclass
class TrackingScore:
    tracks: MotResult                 # hypotheses = track ids
    identities: MotResult | None      # hypotheses = identity names (None when nothing was identified)
    identity_accuracy: float | None


def score_tracks(gt: GroundTruth, tracked: Sequence[TrackedInstance], iou_threshold: float = 0.5) -> TrackingScore:
    by_frame: dict[int, list[TrackedInstance]] = defaultdict(list)
    for t in tracked:
        by_frame[t.frame].append(t)
    unknown = sorted(set(by_frame) - {f.frame for f in gt.frames})
    if unknown:
        raise ValueError(f"predictions for frame(s) {unknown[:5]} that the ground truth does not have")
    any_identity = any(t.identity for t in tracked)
    acc_tracks, acc_ids = MotAccumulator(iou_threshold), MotAccumulator(iou_threshold)
    correct = total = 0
    for fr in gt.frames:
        hyp = by_frame.get(fr.frame, [])
        acc_tracks.update(fr.objects, [(t.track_id, t.detection) for t in hyp])
        if any_identity:
            named = [t for t in hyp if t.identity]
            acc_ids.update(fr.objects, [(t.identity, t.detection) for t in named])
            correct += _identity_hits(fr.objects, fr.identities, named, iou_threshold)
            total += len(fr.objects)
    return TrackingScore(acc_tracks.result(), acc_ids.result() if any_identity else None,
                         correct / total if any_identity and total else None)


def _identity_hits(objects, names: list[str], named: list[TrackedInstance], thr: float) -> int:
    from scipy.optimize import linear_sum_assignment

    if not objects or not named:
        return 0
    iou = region_iou_matrix([d for _, d in objects], [t.detection for t in named])
    rows, cols = linear_sum_assignment(-iou)
    return sum(1 for r, c in zip(rows, cols, strict=True) if iou[r, c] >= thr and named[c].identity == names[r])
