"""Multi-object tracking metrics: identity switches and MOTA (CLEAR MOT), IDF1 (Ristani et al. 2016).

A ground-truth object and a hypothesis match in a frame when their IoU (mask IoU where both have masks,
else box IoU) is at least `iou_threshold` (0.5).

- CLEAR MOT, frame by frame: a ground-truth object keeps the hypothesis it was last matched to while
  they still match; the others are matched by the Hungarian method on IoU. An identity switch is a match
  to a different hypothesis than the object's last one. Unmatched objects are misses (FN), unmatched
  hypotheses false positives (FP). MOTA = 1 - (FN + FP + IDSW) / number of ground-truth detections;
  MOTP here is the mean IoU of the matches.
- IDF1: ground-truth trajectories and hypothesis trajectories are matched one-to-one for the whole video
  (Hungarian on the number of frames in which they match); IDTP is the number of frames matched that
  way, IDF1 = 2 IDTP / (ground-truth detections + hypothesis detections), IDP = IDTP / hypothesis
  detections, IDR = IDTP / ground-truth detections.

This follows the definitions of py-motmetrics: checked against a hand-worked example in
tests/unit/test_tracker_mot.py, and once against py-motmetrics 1.4.0 itself on tracker runs over `sipec synth`
data (identical switches, IDF1, IDTP and MOTA, for track ids and identity names). py-motmetrics is not a
dependency: 1.4.0 calls numpy.asfarray, which NumPy 2 removed.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from sipec.geometry import HasRegion, region_iou_matrix


@dataclass(frozen=True)
class MotResult:
    frames: int
    gt_detections: int
    hyp_detections: int
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    mota: float
    motp_iou: float
    idtp: int
    idfp: int
    idfn: int
    idf1: float
    idp: float
    idr: float
    gt_tracks: int
    hyp_tracks: int

    def to_dict(self) -> dict:
        return asdict(self)


class MotAccumulator:
    """Feed (ground truth, hypotheses) frame by frame with `update`, then read `result()`."""

    def __init__(self, iou_threshold: float = 0.5) -> None:
        if not 0.0 < iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], not {iou_threshold}")
        self.iou_threshold = iou_threshold
        self.frames = 0
        self.last_match: dict[Hashable, Hashable] = {}
        self.gt_count: Counter = Counter()
        self.hyp_count: Counter = Counter()
        self.pair_frames: defaultdict[tuple[Hashable, Hashable], int] = defaultdict(int)
        self.matches = self.misses = self.false_positives = self.switches = 0
        self.iou_sum = 0.0

    def update(self, gt: Sequence[tuple[Hashable, HasRegion]], hyp: Sequence[tuple[Hashable, HasRegion]]) -> None:
        """One frame: (object id, detection) of the ground truth and of the hypotheses, matched by IoU."""
        iou = region_iou_matrix([d for _, d in gt], [d for _, d in hyp])
        self._update([g for g, _ in gt], [h for h, _ in hyp], iou, iou >= self.iou_threshold)

    def update_points(self, gt: Sequence[tuple[Hashable, tuple[float, float]]],
                      hyp: Sequence[tuple[Hashable, tuple[float, float]]], max_distance: float) -> None:
        """One frame of points (e.g. a peer tracker's trajectories): an object and a hypothesis match when their
        centres are at most `max_distance` pixels apart; closer is better. MOTP is then the mean of 1 - d/max."""
        a = np.array([p for _, p in gt], dtype=np.float64).reshape(-1, 2)
        b = np.array([p for _, p in hyp], dtype=np.float64).reshape(-1, 2)
        dist = np.hypot(a[:, None, 0] - b[None, :, 0], a[:, None, 1] - b[None, :, 1])
        self._update([g for g, _ in gt], [h for h, _ in hyp], 1.0 - dist / max_distance, dist <= max_distance)

    def _update(self, gt_ids: list[Hashable], hyp_ids: list[Hashable], iou: np.ndarray, valid: np.ndarray) -> None:
        from scipy.optimize import linear_sum_assignment

        for what, ids in (("ground-truth", gt_ids), ("hypothesis", hyp_ids)):
            dup = [k for k, n in Counter(ids).items() if n > 1]
            if dup:
                raise ValueError(f"frame {self.frames}: {what} id(s) {dup} occur more than once")
        self.frames += 1
        self.gt_count.update(gt_ids)
        self.hyp_count.update(hyp_ids)
        for gi, hi in zip(*np.nonzero(valid), strict=True):
            self.pair_frames[(gt_ids[gi], hyp_ids[hi])] += 1

        hyp_index = {h: j for j, h in enumerate(hyp_ids)}
        matched: dict[int, int] = {}
        used_h: set[int] = set()
        # 1. objects keep their last hypothesis while it still matches
        for gi, g in enumerate(gt_ids):
            j = hyp_index.get(self.last_match[g]) if g in self.last_match else None
            if j is not None and valid[gi, j] and j not in used_h:
                matched[gi] = j
                used_h.add(j)
        # 2. the rest by the Hungarian method on IoU
        rest_g = [gi for gi in range(len(gt_ids)) if gi not in matched]
        rest_h = [j for j in range(len(hyp_ids)) if j not in used_h]
        if rest_g and rest_h:
            ok = valid[np.ix_(rest_g, rest_h)]
            sub = np.where(ok, iou[np.ix_(rest_g, rest_h)] + 1.0, 0.0)   # every valid pair above every invalid one
            for r, c in zip(*linear_sum_assignment(-sub), strict=True):
                if ok[r, c]:
                    gi, j = rest_g[r], rest_h[c]
                    if gt_ids[gi] in self.last_match and self.last_match[gt_ids[gi]] != hyp_ids[j]:
                        self.switches += 1
                    matched[gi] = j
                    used_h.add(j)
        for gi, j in matched.items():
            self.last_match[gt_ids[gi]] = hyp_ids[j]
            self.iou_sum += float(iou[gi, j])
        self.matches += len(matched)
        self.misses += len(gt_ids) - len(matched)
        self.false_positives += len(hyp_ids) - len(matched)

    def result(self) -> MotResult:
        from scipy.optimize import linear_sum_assignment

        n_gt, n_hyp = sum(self.gt_count.values()), sum(self.hyp_count.values())
        gts, hyps = sorted(self.gt_count, key=str), sorted(self.hyp_count, key=str)
        idtp = 0
        if gts and hyps:
            m = np.zeros((len(gts), len(hyps)))
            gi_of, hi_of = {g: i for i, g in enumerate(gts)}, {h: j for j, h in enumerate(hyps)}
            for (g, h), n in self.pair_frames.items():
                m[gi_of[g], hi_of[h]] = n
            rows, cols = linear_sum_assignment(-m)
            idtp = int(m[rows, cols].sum())
        mota = 1.0 - (self.misses + self.false_positives + self.switches) / n_gt if n_gt else float("nan")
        return MotResult(
            frames=self.frames, gt_detections=n_gt, hyp_detections=n_hyp, matches=self.matches,
            misses=self.misses, false_positives=self.false_positives, id_switches=self.switches, mota=mota,
            motp_iou=self.iou_sum / self.matches if self.matches else float("nan"),
            idtp=idtp, idfp=n_hyp - idtp, idfn=n_gt - idtp,
            idf1=2 * idtp / (n_gt + n_hyp) if (n_gt + n_hyp) else float("nan"),
            idp=idtp / n_hyp if n_hyp else float("nan"), idr=idtp / n_gt if n_gt else float("nan"),
            gt_tracks=len(gts), hyp_tracks=len(hyps))
