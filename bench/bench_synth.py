"""`sipec synth` speed: frames per second, video encoding and every ground-truth file included.

The figure the issue asks for is 1000 frames at 640x480 with 4 animals (top camera); the table also
shows the perspective camera, 8 animals, and the renderer alone (no encoding, no files) to show
where the time goes.

    .venv/bin/python -m bench.bench_synth
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from bench.common import median, table


def _generate(frames: int, animals: int, camera: str, seed: int) -> float:
    from sipec.synth.config import SynthConfig
    from sipec.synth.pipeline import generate

    config = SynthConfig(animals=animals, frames=frames, width=640, height=480, camera=camera, seed=seed)
    with tempfile.TemporaryDirectory(prefix="sipec-bench-synth-") as tmp:
        t0 = time.perf_counter()
        generate(config, Path(tmp) / "out")
        return time.perf_counter() - t0


def _render_only(frames: int, animals: int, camera: str, seed: int) -> float:
    from sipec.synth.config import SynthConfig
    from sipec.synth.generator import SynthGenerator

    t0 = time.perf_counter()
    for _ in SynthGenerator(SynthConfig(animals=animals, frames=frames, camera=camera, seed=seed)).frames():
        pass
    return time.perf_counter() - t0


def run(frames: int = 1000, repeats: int = 3) -> str:
    rows = []
    main = [_generate(frames, 4, "top", seed) for seed in range(repeats)]
    seconds = median(main)
    rows.append(["generate (video + all files)", "top", 4, frames, f"{seconds:.1f}", f"{frames / seconds:.0f}"])
    for camera, animals in (("perspective", 4), ("top", 8)):
        s = _generate(frames, animals, camera, 0)
        rows.append(["generate (video + all files)", camera, animals, frames, f"{s:.1f}", f"{frames / s:.0f}"])
    s = _render_only(frames, 4, "top", 0)
    rows.append(["render only (no video, no files)", "top", 4, frames, f"{s:.1f}", f"{frames / s:.0f}"])
    cmd = ".venv/bin/python -m bench.bench_synth"
    return ("### sipec synth\n\n"
            f"640x480, H.264 crf 17 preset veryfast through imageio-ffmpeg's ffmpeg; seconds for the whole run "
            f"(median of {repeats} seeds in the first row, one run otherwise). Aim: 1000 frames in under 60 s. "
            f"Command: `{cmd}`\n\n"
            + table(["what", "camera", "animals", "frames", "seconds", "frames/s"], rows) + "\n")


if __name__ == "__main__":
    t0 = time.time()
    print(run())
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
