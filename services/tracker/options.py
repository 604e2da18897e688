"""Per-stream tracker options (TrackerOptions in tracker.proto) and the server's limits on them."""

from __future__ import annotations

from dataclasses import dataclass

from sipec.api.defaults import TRACKER_DEFAULTS
from sipec.serving.errors import InvalidInput

MATCHING_METHODS: tuple[str, ...] = ("greedy", "hungarian")
MOTION_MODELS: tuple[str, ...] = ("kalman", "none")
IDENTITY_EVIDENCE: tuple[str, ...] = ("apart", "restart", "all")


@dataclass(frozen=True)
class TrackerOptions:
    """How one stream is tracked. The defaults apply where TrackerOptions leaves a field 0/empty.

    - matching: "greedy" (the paper: the largest overlap first, each track and instance used once) or
      "hungarian" (default: the maximum total overlap);
    - min_iou: an instance whose best IoU with every candidate track is below this starts a new track;
    - max_lost_frames: a track missing for up to this many frames (an animal hidden under an object)
      can still be resumed; after that it ends and a reappearing animal gets a new track;
    - identity_window: IdNet probabilities of the last this-many frames of a track are averaged;
    - interaction_dilation: pixels by which both masks are dilated before testing a pair for overlap;
    - max_distance: a distance in pixels: instances left without a track by the overlap matching then go to
      tracks also left over (seen in the look-back) whose predicted centre is at most this far, nearest first
      (Hungarian on distance) -- for animals that reappear from under an object where their last mask does
      not overlap; 0: an automatic gate with motion "kalman", off with motion "none" (the paper: IoU only);
    - motion: "kalman" (a constant-velocity Kalman filter on each track's centre: overlap with the last box
      moved to the predicted centre, distance to the predicted centre) or "none" (the last appearance);
    - animals: the known number of animals, 0 if unknown: tracks never end, at most this many start, and an
      instance left over goes to the nearest lost track (fragments stitched); extra instances get no track;
    - identity_evidence: "restart" (default): a track's IdNet answers count from every frame and start afresh when
      its animal comes out of a contact with another detection (boxes widened by a tenth, then masks), or when the
      track is taken up after a gap or stitched -- where a track may have swapped animals; "apart": the same, but
      frames in contact do not count (their crops mix two animals); "all": every frame of the last
      `identity_window` (the paper's smoothing).
    """

    matching: str = TRACKER_DEFAULTS["matching"]
    min_iou: float = TRACKER_DEFAULTS["min_iou"]
    max_lost_frames: int = TRACKER_DEFAULTS["max_lost_frames"]
    identity_window: int = TRACKER_DEFAULTS["identity_window"]
    interaction_dilation: int = TRACKER_DEFAULTS["interaction_dilation"]
    max_distance: float = TRACKER_DEFAULTS["max_distance"]
    motion: str = TRACKER_DEFAULTS["motion"]
    animals: int = TRACKER_DEFAULTS["animals"]
    identity_evidence: str = TRACKER_DEFAULTS["identity_evidence"]
    min_score: float = TRACKER_DEFAULTS["min_score"]
    new_track_score: float = TRACKER_DEFAULTS["new_track_score"]


@dataclass(frozen=True)
class TrackerLimits:
    """Bounds on the state of one stream (RESOURCE_EXHAUSTED / INVALID_ARGUMENT beyond them)."""

    max_tracks: int = 64               # live tracks (seen or lost within the look-back) per stream
    max_instances: int = 256           # instances in one frame
    max_lost_frames: int = 600         # largest look-back a stream may ask for
    max_identity_window: int = 600     # largest identity window a stream may ask for
    max_interaction_dilation: int = 200
    max_distance: float = 10_000.0     # pixels
    max_animals: int = 64              # largest known number of animals a stream may give

    def __post_init__(self) -> None:
        for name in ("max_tracks", "max_instances", "max_lost_frames", "max_identity_window",
                     "max_interaction_dilation", "max_distance", "max_animals"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, not {getattr(self, name)}")


def resolve_options(matching: str = "", min_iou: float = 0.0, max_lost_frames: int = 0, identity_window: int = 0,
                    interaction_dilation: int = 0, max_distance: float = 0.0, limits: TrackerLimits | None = None,
                    field: str = "options", motion: str = "", animals: int = 0,
                    identity_evidence: str = "", min_score: float = 0.0,
                    new_track_score: float = 0.0) -> TrackerOptions:
    """Options from TrackerOptions-style values (0 / "" = default), checked against `limits`.

    Raises InvalidInput naming the field (e.g. ``options.matching``) and what is allowed.
    """
    limits = limits or TrackerLimits()
    default = TrackerOptions()
    matching = matching.strip().lower() or default.matching
    if matching not in MATCHING_METHODS:
        raise InvalidInput(f"{field}.matching must be one of {', '.join(MATCHING_METHODS)} (or empty for "
                           f"{default.matching}), not {matching!r}")
    if not (0.0 <= min_iou < 1.0):
        raise InvalidInput(f"{field}.min_iou must be in [0, 1) (0 = default {default.min_iou}), not {min_iou}")
    checks = (("max_lost_frames", max_lost_frames, limits.max_lost_frames),
              ("identity_window", identity_window, limits.max_identity_window),
              ("interaction_dilation", interaction_dilation, limits.max_interaction_dilation))
    for name, value, limit in checks:
        if value < 0 or value > limit:
            raise InvalidInput(f"{field}.{name} must be 0 (default) to {limit} (this server's limit), not {value}")
    motion = motion.strip().lower() or default.motion
    if motion not in MOTION_MODELS:
        raise InvalidInput(f"{field}.motion must be one of {', '.join(MOTION_MODELS)} (or empty for "
                           f"{default.motion}), not {motion[:100]!r}")
    evidence = identity_evidence.strip().lower() or default.identity_evidence
    if evidence not in IDENTITY_EVIDENCE:
        raise InvalidInput(f"{field}.identity_evidence must be one of {', '.join(IDENTITY_EVIDENCE)} (or empty for "
                           f"{default.identity_evidence}), not {evidence[:100]!r}")
    if not (0 <= animals <= min(limits.max_animals, limits.max_tracks)):
        raise InvalidInput(f"{field}.animals must be 0 (unknown) to {min(limits.max_animals, limits.max_tracks)} "
                           f"(this server's limit), not {animals}")
    if not (0.0 <= max_distance <= limits.max_distance):
        raise InvalidInput(f"{field}.max_distance must be 0 (off) to {limits.max_distance:g} pixels, "
                           f"not {max_distance}")
    if not (0.0 <= min_score <= 1.0):
        raise InvalidInput(f"{field}.min_score must be in [0, 1] (0: every instance starts or continues tracks), "
                           f"not {min_score}")
    if not (0.0 <= new_track_score <= 1.0):
        raise InvalidInput(f"{field}.new_track_score must be in [0, 1] (0: automatic), not {new_track_score}")
    return TrackerOptions(matching=matching, min_iou=min_iou or default.min_iou,
                          max_lost_frames=max_lost_frames or default.max_lost_frames,
                          identity_window=identity_window or default.identity_window,
                          interaction_dilation=interaction_dilation or default.interaction_dilation,
                          max_distance=float(max_distance), motion=motion, animals=int(animals),
                          identity_evidence=evidence, min_score=float(min_score),
                          new_track_score=float(new_track_score))


def options_from_proto(msg, limits: TrackerLimits | None = None) -> TrackerOptions:
    """TrackerOptions from the ``sipec.v1.TrackerOptions`` message of a stream's first request."""
    return resolve_options(msg.matching, float(msg.min_iou), int(msg.max_lost_frames), int(msg.identity_window),
                           int(msg.interaction_dilation), float(msg.max_distance), limits, motion=msg.motion,
                           animals=int(msg.animals), identity_evidence=msg.identity_evidence,
                           min_score=float(msg.min_score), new_track_score=float(msg.new_track_score))
