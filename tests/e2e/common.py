"""What the end-to-end tests share: running `sipec` as a process, and a synth video with a briefly trained SegNet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def sipec(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sipec", *args], cwd=ROOT, text=True, capture_output=True,
                          check=check, timeout=900)


def synth_with_segnet(d: Path, frames: int, seed: int, extra_config: str = "") -> Path:
    """`d/synth` (2 animals, 320x240), `d/models` with a SegNet trained briefly (the point is the pipeline, not
    accuracy: min_score 0.001 keeps its detections) and `d/pipeline.yaml` (segnet + tracker).

    Training is not bit-reproducible across machines and loads, so the SegNet must find animals with a margin:
    after 6 epochs its scores sat at 0.05-0.17 against the graph's 0.05 cut, and one CI machine got a model
    that found nothing in 24 frames; after 12 epochs (same wall time here, compilation dominates) the median
    detection scores 0.2."""
    sipec("synth", "--out", str(d / "synth"), "--animals", "2", "--frames", str(frames), "--size", "320x240",
          "--seed", str(seed), "--quiet")
    sipec("train", "segnet", "--synth", str(d / "synth"), "--out", str(d / "models"), "--image-size", "128",
          "--epochs", "12", "--limit", "24", "--batch-size", "2")
    (d / "pipeline.yaml").write_text("modules: [segnet, tracker]\nsegnet: {min_score: 0.001, max_instances: 3}\n"
                                     "chunk_frames: 10\n" + extra_config)
    return d
