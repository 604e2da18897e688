"""`StreamTracker`: the tracking state of one video, fed one frame at a time.

Per frame: check the frame order and the input; match instances to the tracks seen in the last
`max_lost_frames + 1` frames, in up to four stages:

1. overlap: mask IoU with each track's last appearance; with `motion: kalman` (default), for a track predicted
   to have moved, the larger of that and the box IoU with its last box moved to the predicted centre; greedy or
   Hungarian;
2. distance: what is left, by the distance from each instance's centre to each left-over track's predicted
   centre (Hungarian), within `max_distance` pixels, or with `max_distance` 0 and `motion: kalman` within a gate
   that grows with the animal's length, speed and the frames it has been lost (re-identification within a gap);
   stages 1 and 2 take the instances scored at least `min_score` (all of them with the default 0);
2b. low-score instances (below `min_score`, ByteTrack's second pass): overlap (IoU >= 0.5) with the tracks still
   left over; they never start a track;
3. known number of animals (`animals: N`): tracks never end, at most N are started, and an instance still left
   goes to the nearest lost track whatever the distance (fragments stitched); instances beyond N in a frame
   stay without a track (track id 0).

Then new tracks start for the rest that score at least the new-track score (`new_track_score`, or automatically
the 10th percentile of the scores of the instances that continued tracks so far: a detector's doubtful false
positives do not start tracks); the others stay untracked in that frame. Identity probabilities are smoothed along
each track and each animal in the frame gets one identity (none used twice); interacting pairs are listed. A frame
that fails any check changes nothing (the error is raised before the state is touched), so a stream can go on
after a bad frame.

The state is bounded: at most `limits.max_tracks` live tracks (a frame that would exceed it raises
TooLarge, RESOURCE_EXHAUSTED), each with one last appearance and at most `identity_window` probability
vectors, and a 100-bin histogram of scores; tracks lost for longer than the look-back are forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.tracker.detections import Detection
from services.tracker.identity import IdentityAssignment, IdentitySmoother, assign_identities, check_probabilities
from services.tracker.interactions import InteractionEvent, find_interactions
from services.tracker.matching import assign, distance_assignment
from services.tracker.motion import CentreFilter
from services.tracker.options import TrackerLimits, TrackerOptions
from sipec.geometry import animals_apart, box_iou, decode_rle, region_iou_matrix
from sipec.serving.errors import InvalidInput, TooLarge

GATE_BODY = 1.0            # distance gate (motion: kalman, max_distance 0): this many body lengths, plus ...
GATE_SIGMAS = 3.0          # ... this many standard deviations of the predicted centre (Kalman covariance)
APART_MARGIN = 0.1         # identity_evidence "apart": boxes widened by this x their longer side, then masks, meet
LOW_SCORE_MIN_IOU = 0.5    # ByteTrack's second pass: a low-score instance continues a track it overlaps this much
SCORE_BINS = 100           # the automatic new-track score: scores of continuing instances in bins of 0.01 ...
BIRTH_PERCENTILE = 10.0    # ... a new track needs at least this percentile of them (the lower edge of its bin) ...
BIRTH_MIN_SAMPLES = 50     # ... once there are this many (before: min_score)
MOVED = 0.1                # body lengths: a track predicted to move further is also matched by its moved box


@dataclass
class Track:
    track_id: int
    last: Detection
    first_frame: int
    last_frame: int
    hits: int = 1
    motion: CentreFilter | None = None
    touching: bool = False         # in contact with another detection in its last frame

    def predicted(self, frame: int) -> tuple[float, float]:
        return self.motion.predict(frame) if self.motion is not None else self.last.com

    def observe(self, det: Detection, frame: int) -> None:
        size = det.length
        if self.motion is None:
            self.motion = CentreFilter(det.com, frame, size)
        else:
            self.motion.update(det.com, frame, size)
        self.last, self.last_frame = det, frame


@dataclass
class TrackedDetection:
    index: int                     # the instance's position in the frame's input
    track_id: int
    identity: str = ""             # empty when unknown
    identity_confidence: float = 0.0


@dataclass
class FrameResult:
    frame: int
    instances: list[TrackedDetection]
    interactions: list[InteractionEvent] = field(default_factory=list)
    new_tracks: list[int] = field(default_factory=list)
    ended_tracks: list[int] = field(default_factory=list)


class StreamTracker:
    """Tracks, identities and interactions of one video, one frame at a time (not thread-safe)."""

    def __init__(self, options: TrackerOptions | None = None, limits: TrackerLimits | None = None) -> None:
        self.options = options or TrackerOptions()
        self.limits = limits or TrackerLimits()
        self.tracks: dict[int, Track] = {}
        self.identity_names: list[str] | None = None
        self.smoother = IdentitySmoother(self.options.identity_window)
        self.last_frame: int | None = None
        self.frame_size: tuple[int, int] | None = None
        self._next_id = 1
        self.joined = 0      # instances given to a lost track by stage 3 (known number of animals)
        self._continued = np.zeros(SCORE_BINS, np.int64)   # histogram of the scores of instances continuing tracks

    def new_track_score(self) -> float:
        """The least score of an instance that starts a track: `new_track_score` when set; else (automatic) the
        BIRTH_PERCENTILE-th percentile of the scores of the instances that continued tracks so far (once there are
        BIRTH_MIN_SAMPLES), so that a detection scored like the tracked animals starts a track and the detector's
        less certain false positives do not, whatever the detector's calibration; never below `min_score`."""
        opts = self.options
        if opts.new_track_score > 0:
            return max(opts.new_track_score, opts.min_score)
        total = int(self._continued.sum())
        if total < BIRTH_MIN_SAMPLES:
            return opts.min_score
        k = int(np.searchsorted(np.cumsum(self._continued), BIRTH_PERCENTILE / 100 * total))  # first bin reaching it
        return max(opts.min_score, k / SCORE_BINS)

    # ------------------------------------------------------------------ checks (no state change)
    def _check_frame(self, frame: int, dets: Sequence[Detection]) -> None:
        if frame < 0:
            raise InvalidInput(f"frame.index must be >= 0, got {frame}")
        if self.last_frame is not None and frame <= self.last_frame:
            raise InvalidInput(f"frame.index {frame} is not after the previous frame {self.last_frame}: "
                               "frames of a stream must arrive in increasing order")
        if len(dets) > self.limits.max_instances:
            raise TooLarge(f"instances: {len(dets)} in one frame, more than this server's limit "
                           f"max_instances={self.limits.max_instances}")
        size = self.frame_size
        for d in dets:
            if d.frame_size is None:
                continue
            if size is None:
                size = d.frame_size
            elif d.frame_size != size:
                raise InvalidInput(f"instances[{d.index}].mask is {d.frame_size[1]}x{d.frame_size[0]}, but this "
                                   f"stream's frames are {size[1]}x{size[0]} (width x height)")

    def _check_identities(self, identities: Sequence[tuple[Sequence[str], np.ndarray]] | None,
                          n: int) -> tuple[list[str] | None, list[np.ndarray | None]]:
        """(identity names, one normalised vector or None per instance)."""
        if not identities:
            return self.identity_names, [None] * n
        if len(identities) != n:
            raise InvalidInput(f"identities: {len(identities)} given for {n} instances; send one per instance, "
                               "in the same order, or none")
        names = self.identity_names
        vectors: list[np.ndarray | None] = []
        for i, (item_names, values) in enumerate(identities):
            field_name = f"identities[{i}]"
            item_names = list(item_names)
            if len(values) == 0 and not item_names:
                vectors.append(None)    # this instance was not identified
                continue
            if item_names:
                if names is None:
                    if len(set(item_names)) != len(item_names):
                        raise InvalidInput(f"{field_name}.names has duplicates: {item_names}")
                    names = item_names
                elif item_names != names:
                    raise InvalidInput(f"{field_name}.names {item_names} differ from this stream's identity names "
                                       f"{names}; keep one order for the whole stream")
            elif names is None:
                names = [str(k) for k in range(len(values))]
            vectors.append(check_probabilities(np.asarray(values), len(names), field_name))
        return names, vectors

    # ------------------------------------------------------------------ one frame
    def step(self, frame: int, dets: Sequence[Detection],
             identities: Sequence[tuple[Sequence[str], np.ndarray]] | None = None) -> FrameResult:
        """Track one frame. `identities`: per detection (names, probabilities), or None/empty."""
        self._check_frame(frame, dets)
        names, vectors = self._check_identities(identities, len(dets))
        opts = self.options

        # instances whose track the client already knows (a second pass, e.g. for identities) keep it
        det_track = {i: d.preset_track for i, d in enumerate(dets) if d.preset_track}
        if len(set(det_track.values())) != len(det_track):
            raise InvalidInput("instances: the same track_id is preset on two instances of one frame")
        # tracks still within the look-back (missing for at most max_lost_frames frames); all, when the number of
        # animals is known (an animal does not leave the arena)
        live = {tid: t for tid, t in self.tracks.items()
                if opts.animals or frame - t.last_frame - 1 <= opts.max_lost_frames}
        ended = sorted(set(self.tracks) - set(live))
        cand = [t for t in sorted(live) if t not in det_track.values()]
        free = [i for i in range(len(dets)) if i not in det_track]
        high = [i for i in free if dets[i].score >= opts.min_score]
        low = [i for i in free if dets[i].score < opts.min_score]
        det_track.update(self._associate(frame, dets, high, cand, live))      # 1 and 2
        if low:   # 2b. ByteTrack's second pass: low-score instances continue the tracks still left over
            det_track.update(self._associate(frame, dets, low, [t for t in cand if t not in det_track.values()],
                                             live, LOW_SCORE_MIN_IOU))
        # instances that may start a track: high-score ones left over that score like the animals tracked so far
        birth = self.new_track_score()
        left = [i for i in high if i not in det_track]
        may_start = [i for i in left if dets[i].score >= birth]
        unmatched = may_start
        joined = 0
        if opts.animals:   # 3. at most N tracks; what is left goes to the nearest lost track
            known = set(self.tracks) | set(det_track.values())    # with ids preset in this frame (a replay)
            room = max(0, opts.animals - len(known))                # the first `room` that may start, start
            unmatched = may_start[:room]
            beyond = [i for i in left if i not in unmatched]
            lost = [t for t in sorted(live) if t not in det_track.values()]
            pairs = distance_assignment([dets[i].com for i in beyond], [live[t].predicted(frame) for t in lost],
                                        float("inf"))
            for r, c in pairs:
                det_track[beyond[r]] = lost[c]
            joined = len(pairs)
        # the rest stay without a track (id 0): beyond N animals, scored too low to start one, low-score ones left over
        if len(live) + len(unmatched) > self.limits.max_tracks:
            raise TooLarge(f"this frame would need {len(live) + len(unmatched)} live tracks, more than this server's "
                           f"limit max_tracks={self.limits.max_tracks} per stream (tracks end after "
                           f"{opts.max_lost_frames} frames unseen)")

        # ---- commit: nothing below raises on bad input
        for tid in ended:
            del self.tracks[tid]
            self.smoother.drop(tid)
        new_tracks = [tid for tid in det_track.values() if tid not in self.tracks]
        self._next_id = max([self._next_id, *(tid + 1 for tid in det_track.values())])
        for i in unmatched:
            det_track[i] = self._next_id
            new_tracks.append(self._next_id)
            self._next_id += 1
        joined_tracks = {lost[c] for _, c in pairs} if opts.animals else set()
        for i, tid in det_track.items():
            if tid in self.tracks:
                t = self.tracks[tid]
                t.hits += 1
                # taken up after a gap, or joined to what was left over: it may be another animal now, so its
                # identity evidence restarts as after a contact
                t.touching = t.touching or frame - t.last_frame > 1 or tid in joined_tracks
            else:
                t = self.tracks[tid] = Track(tid, dets[i], frame, frame)
            t.observe(dets[i], frame)
        self.joined += joined
        for i, tid in det_track.items():   # the scores of instances that continued a track (a replay sends the same)
            if tid not in new_tracks:
                self._continued[min(max(int(dets[i].score * SCORE_BINS), 0), SCORE_BINS - 1)] += 1
        self.identity_names = names
        self.last_frame = frame
        if self.frame_size is None:
            self.frame_size = next((d.frame_size for d in dets if d.frame_size is not None), None)

        assigned = self._identities(frame, dets, det_track, vectors)
        out = []
        for i in range(len(dets)):
            tid = det_track.get(i, 0)
            a = assigned.get(tid) if tid else None
            out.append(TrackedDetection(i, tid, names[a.identity] if (a and names) else "", a.confidence if a else 0.0))
        events = find_interactions([(det_track[i], d) for i, d in enumerate(dets) if i in det_track],
                                   opts.interaction_dilation)
        return FrameResult(frame, out, events, new_tracks, ended)

    def _associate(self, frame: int, dets: Sequence[Detection], rows: list[int], cand: list[int],
                   live: dict[int, Track], overlap_only: float = 0.0) -> dict[int, int]:
        """Stages 1 (overlap) and 2 (distance to the predicted centres) for instances `rows` and tracks `cand`:
        {instance: track}. `overlap_only` > 0: stage 1 alone, with this least overlap (ByteTrack's second pass)."""
        opts = self.options
        kalman = opts.motion == "kalman"
        out: dict[int, int] = {}
        iou = region_iou_matrix([dets[i] for i in rows], [live[t].last for t in cand])
        if kalman and iou.size:   # 1. for a track predicted to have moved: overlap with its box moved there too
            for c, t in enumerate(cand):
                track, centre = live[t], live[t].predicted(frame)
                shift = np.hypot(centre[0] - track.last.com[0], centre[1] - track.last.com[1])
                if shift > MOVED * track.last.length:   # a still animal is matched by its mask alone
                    moved = _moved_box(track.last, centre)
                    iou[:, c] = np.maximum(iou[:, c], [box_iou(dets[i].box, moved) for i in rows])
        recency = np.array([frame - live[t].last_frame for t in cand], dtype=np.float64)
        for r, c in assign(iou, opts.matching, overlap_only or opts.min_iou, recency):
            out[rows[r]] = cand[c]
        if not overlap_only and (opts.max_distance > 0 or kalman):   # 2. distance to the predicted centres
            rest_d = [i for i in rows if i not in out]
            rest_t = [t for t in cand if t not in out.values()]
            gates = [opts.max_distance or self._gate(live[t], frame) for t in rest_t]
            for r, c in distance_assignment([dets[i].com for i in rest_d], [live[t].predicted(frame) for t in rest_t],
                                            gates):
                out[rest_d[r]] = rest_t[c]
        return out

    @staticmethod
    def _gate(track: Track, frame: int) -> float:
        """How far from its predicted centre a track's animal may be found: a body length plus three standard
        deviations of the prediction (large while the track's speed is unknown and as frames are lost)."""
        if track.motion is None:
            return track.last.length * GATE_BODY
        return track.motion.size * GATE_BODY + GATE_SIGMAS * track.motion.position_std(frame)

    def _identities(self, frame: int, dets: Sequence[Detection], det_track: dict[int, int],
                    vectors: list[np.ndarray | None]) -> dict[int, IdentityAssignment]:
        smoothed = {}
        apart = None
        if self.options.identity_evidence != "all" and any(v is not None for v in vectors):
            apart = animals_apart(np.zeros(len(dets), np.int64), np.array([d.box for d in dets], np.float64),
                                  APART_MARGIN, lambda i: decode_rle(dets[i].rle) if dets[i].rle else None)
        for i, tid in det_track.items():
            if apart is not None:   # evidence afresh after each contact ("apart": from frames apart only)
                track = self.tracks[tid]
                if not apart[i]:
                    track.touching = True
                    if self.options.identity_evidence == "apart":
                        vectors[i] = None
                elif track.touching:
                    track.touching = False
                    self.smoother.drop(tid)
            if vectors[i] is not None:
                self.smoother.add(tid, frame, vectors[i])
            s = self.smoother.smoothed(tid, frame)
            if s is not None:
                smoothed[tid] = s
        return assign_identities(smoothed)

    @property
    def live_tracks(self) -> int:
        return len(self.tracks)


def _moved_box(det: Detection, centre: tuple[float, float]) -> tuple[float, float, float, float]:
    """`det`'s box moved so that its centre of mass sits at `centre`."""
    dx, dy = centre[0] - det.com[0], centre[1] - det.com[1]
    x1, y1, x2, y2 = det.box
    return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)
