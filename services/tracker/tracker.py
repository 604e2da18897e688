"""`StreamTracker`: the tracking state of one video, fed one frame at a time.

Per frame: check the frame order and the input; match instances to the tracks seen in the last
`max_lost_frames + 1` frames (mask IoU with each track's last appearance, greedy or Hungarian; optionally
then by centre-of-mass distance for what is left); start new tracks for the rest; smooth identity
probabilities along each track and give each animal in the frame one identity (none used twice); list
interacting pairs. A frame that fails any check changes nothing (the error is raised before the state is
touched), so a stream can go on after a bad frame.

The state is bounded: at most `limits.max_tracks` live tracks (a frame that would exceed it raises
TooLarge, RESOURCE_EXHAUSTED), each with one last appearance and at most `identity_window` probability
vectors; tracks lost for longer than the look-back are forgotten.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from services.tracker.detections import Detection
from services.tracker.identity import IdentityAssignment, IdentitySmoother, assign_identities, check_probabilities
from services.tracker.interactions import InteractionEvent, find_interactions
from services.tracker.matching import assign, distance_assignment, iou_matrix
from services.tracker.options import TrackerLimits, TrackerOptions
from sipec.serving.errors import InvalidInput, TooLarge


@dataclass
class Track:
    track_id: int
    last: Detection
    first_frame: int
    last_frame: int
    hits: int = 1


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
        # tracks still within the look-back (missing for at most max_lost_frames frames)
        live = {tid: t for tid, t in self.tracks.items() if frame - t.last_frame - 1 <= opts.max_lost_frames}
        ended = sorted(set(self.tracks) - set(live))
        cand = [t for t in sorted(live) if t not in det_track.values()]
        free = [i for i in range(len(dets)) if i not in det_track]
        iou = iou_matrix([dets[i] for i in free], [live[t].last for t in cand])
        recency = np.array([frame - live[t].last_frame for t in cand], dtype=np.float64)
        for r, c in assign(iou, opts.matching, opts.min_iou, recency):
            det_track[free[r]] = cand[c]
        if opts.max_distance > 0:
            rest_d = [i for i in range(len(dets)) if i not in det_track]
            rest_t = [c for c in range(len(cand)) if cand[c] not in det_track.values()]
            for r, c in distance_assignment([dets[i] for i in rest_d], [live[cand[c]].last for c in rest_t],
                                            opts.max_distance):
                det_track[rest_d[r]] = cand[rest_t[c]]
        unmatched = [i for i in range(len(dets)) if i not in det_track]
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
        for i, tid in det_track.items():
            if tid in self.tracks:
                t = self.tracks[tid]
                t.last, t.last_frame, t.hits = dets[i], frame, t.hits + 1
            else:
                self.tracks[tid] = Track(tid, dets[i], frame, frame)
        self.identity_names = names
        self.last_frame = frame
        if self.frame_size is None:
            self.frame_size = next((d.frame_size for d in dets if d.frame_size is not None), None)

        assigned = self._identities(frame, det_track, vectors)
        out = []
        for i in range(len(dets)):
            a = assigned.get(det_track[i])
            out.append(TrackedDetection(i, det_track[i], names[a.identity] if (a and names) else "",
                                        a.confidence if a else 0.0))
        events = find_interactions([(det_track[i], d) for i, d in enumerate(dets)], opts.interaction_dilation)
        return FrameResult(frame, out, events, new_tracks, ended)

    def _identities(self, frame: int, det_track: dict[int, int],
                    vectors: list[np.ndarray | None]) -> dict[int, IdentityAssignment]:
        smoothed = {}
        for i, tid in det_track.items():
            if vectors[i] is not None:
                self.smoother.add(tid, frame, vectors[i])
            s = self.smoother.smoothed(tid, frame)
            if s is not None:
                smoothed[tid] = s
        return assign_identities(smoothed)

    @property
    def live_tracks(self) -> int:
        return len(self.tracks)
