"""The pipeline configuration: one YAML file, validated, every key named in its error messages.

```yaml
modules: [segnet, tracker, idnet, posenet, behavenet]   # any subset; segnet is required
segnet: {min_score: 0.5, max_instances: 16}
tracker: {matching: greedy, min_iou: 0.1, max_lost_frames: 10, identity_window: 25, interaction_dilation: 5,
          max_distance: 0, motion: kalman, animals: 0,   # animals: the known number of animals (0: unknown)
          identity_evidence: restart,   # IdNet evidence afresh after each contact (apart, all)
          new_track_score: 0,   # least score of an instance that starts a track (0: automatic, from the tracked ones)
          low_score: 0}         # ByteTrack: SegNet instances from this score up to segnet.min_score only continue
                                # tracks (0: off)
estimate_3d: true            # when the tracker serves a depth model
outputs: {annotated_video: true, pose: true, ethogram: true, density: true}
chunk_frames: 200            # rows are checkpointed every this many frames (resume granularity)
max_frames_in_flight: 64     # bounded memory between decoding and completed frames
timeout_s: 120
retries: 4                   # a module UNAVAILABLE mid-video: retry the video this many times, resuming ...
retry_backoff_s: 1.0         # ... after 1, 2, 4, 8 s (doubling)
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.pipeline import MODULE_ORDER, PipelineOptions

OUTPUTS = ("annotated_video", "pose", "ethogram", "density")
TRACKER_KEYS = ("matching", "min_iou", "max_lost_frames", "identity_window", "interaction_dilation", "max_distance",
                "motion", "animals", "identity_evidence", "new_track_score", "low_score")


class ConfigError(ValueError):
    pass


@dataclass
class PipelineConfig:
    modules: tuple[str, ...] = MODULE_ORDER
    min_score: float = 0.5
    max_instances: int = 16
    tracker: dict[str, Any] = field(default_factory=dict)   # TrackerOptions fields
    low_score: float = 0.0
    estimate_3d: bool = True
    outputs: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(OUTPUTS, True))
    chunk_frames: int = 200
    max_frames_in_flight: int = 64
    timeout_s: float = 120.0
    retries: int = 4
    retry_backoff_s: float = 1.0

    def pipeline_options(self) -> PipelineOptions:
        return PipelineOptions(modules=self.modules, min_score=self.min_score, max_instances=self.max_instances,
                               max_frames_in_flight=self.max_frames_in_flight, tracker=dict(self.tracker),
                               low_score=self.low_score,
                               estimate_3d=self.estimate_3d, timeout_s=self.timeout_s)


def _expect(where: str, value: Any, kind: type | tuple[type, ...], positive: bool = False) -> Any:
    if isinstance(value, bool) and kind is not bool and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{where}: must be positive, got {value!r}")
    return value


def parse_config(data: dict[str, Any], source: str = "config") -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    known = {"modules", "segnet", "tracker", "estimate_3d", "outputs", "chunk_frames", "max_frames_in_flight",
             "timeout_s", "retries", "retry_backoff_s"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    cfg = PipelineConfig()
    if "modules" in data:
        mods = data["modules"]
        if not isinstance(mods, list) or not all(isinstance(m, str) for m in mods):
            raise ConfigError(f"{source}: modules must be a list of names")
        bad = [m for m in mods if m not in MODULE_ORDER]
        if bad:
            raise ConfigError(f"{source}: unknown module(s) {', '.join(bad)} (modules: {', '.join(MODULE_ORDER)})")
        if "segnet" not in mods:
            raise ConfigError(f"{source}: modules must include segnet (every other module starts from its masks)")
        for m in ("idnet", "behavenet"):
            if m in mods and "tracker" not in mods:
                raise ConfigError(f"{source}: module {m} needs the tracker (its crops are grouped per track)")
        cfg.modules = tuple(m for m in MODULE_ORDER if m in mods)
    seg = data.get("segnet", {}) or {}
    if not isinstance(seg, dict) or set(seg) - {"min_score", "max_instances"}:
        raise ConfigError(f"{source}: segnet takes min_score and max_instances")
    if "min_score" in seg:
        cfg.min_score = float(_expect(f"{source}: segnet.min_score", seg["min_score"], (int, float)))
    if "max_instances" in seg:
        cfg.max_instances = _expect(f"{source}: segnet.max_instances", seg["max_instances"], int, positive=True)
    trk = data.get("tracker", {}) or {}
    if not isinstance(trk, dict) or set(trk) - set(TRACKER_KEYS):
        raise ConfigError(f"{source}: tracker takes {', '.join(TRACKER_KEYS)}")
    if "matching" in trk and trk["matching"] not in ("greedy", "hungarian"):
        raise ConfigError(f"{source}: tracker.matching must be greedy or hungarian, got {trk['matching']!r}")
    if "motion" in trk and trk["motion"] not in ("kalman", "none"):
        raise ConfigError(f"{source}: tracker.motion must be kalman or none, got {trk['motion']!r}")
    if "identity_evidence" in trk and trk["identity_evidence"] not in ("apart", "restart", "all"):
        raise ConfigError(f"{source}: tracker.identity_evidence must be apart, restart or all, got "
                          f"{trk['identity_evidence']!r}")
    for key in ("max_lost_frames", "identity_window", "interaction_dilation", "animals"):
        if key in trk:
            _expect(f"{source}: tracker.{key}", trk[key], int)
            if trk[key] < 0:
                raise ConfigError(f"{source}: tracker.{key} must be >= 0, got {trk[key]}")
    for key in ("min_iou", "max_distance"):
        if key in trk:
            _expect(f"{source}: tracker.{key}", trk[key], (int, float))
            if trk[key] < 0:
                raise ConfigError(f"{source}: tracker.{key} must be >= 0, got {trk[key]}")
    for key in ("new_track_score", "low_score"):
        if key in trk:
            _expect(f"{source}: tracker.{key}", trk[key], (int, float))
            if not 0 <= trk[key] <= 1:
                zero = "automatic" if key == "new_track_score" else "off"
                raise ConfigError(f"{source}: tracker.{key} must be in [0, 1] (0: {zero}), got {trk[key]}")
    cfg.tracker = {k: v for k, v in trk.items() if k != "low_score"}
    cfg.low_score = float(trk.get("low_score", 0.0))
    if "estimate_3d" in data:
        cfg.estimate_3d = _expect(f"{source}: estimate_3d", data["estimate_3d"], bool)
    outs = data.get("outputs", {}) or {}
    if not isinstance(outs, dict) or set(outs) - set(OUTPUTS):
        raise ConfigError(f"{source}: outputs takes {', '.join(OUTPUTS)} (true/false)")
    for k, v in outs.items():
        cfg.outputs[k] = _expect(f"{source}: outputs.{k}", v, bool)
    for key in ("chunk_frames", "max_frames_in_flight"):
        if key in data:
            setattr(cfg, key, _expect(f"{source}: {key}", data[key], int, positive=True))
    if "timeout_s" in data:
        cfg.timeout_s = float(_expect(f"{source}: timeout_s", data["timeout_s"], (int, float), positive=True))
    if "retries" in data:
        cfg.retries = _expect(f"{source}: retries", data["retries"], int)
        if cfg.retries < 0:
            raise ConfigError(f"{source}: retries: must be 0 or more, got {cfg.retries}")
    if "retry_backoff_s" in data:
        cfg.retry_backoff_s = float(_expect(f"{source}: retry_backoff_s", data["retry_backoff_s"], (int, float),
                                            positive=True))
    return cfg


def load_config(path: Path | None) -> PipelineConfig:
    if path is None:
        return PipelineConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    return parse_config(data, str(p))
