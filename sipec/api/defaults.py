"""What the contract's zero values stand for: the defaults of `TrackerOptions` (tracker.proto), where a field
left 0/empty means "the default". The tracker service applies them; the orchestrator reads them to know, e.g.,
how far back the tracker's identity smoothing reaches when a pipeline does not set it (resume warm-up)."""

from __future__ import annotations

TRACKER_DEFAULTS = {
    "matching": "hungarian",
    "min_iou": 0.1,
    "max_lost_frames": 30,
    "identity_window": 30,
    "interaction_dilation": 8,
    "max_distance": 0.0,
    "motion": "kalman",
    "animals": 0,
    "identity_evidence": "restart",
    "min_score": 0.0,
    "new_track_score": 0.0,
}
