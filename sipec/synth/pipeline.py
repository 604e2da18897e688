"""`generate`: one synthetic video and all its ground truth in a folder."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from sipec.synth.config import SynthConfig
from sipec.synth.generator import SynthGenerator
from sipec.synth.video import DEFAULT_CRF, Mp4Writer
from sipec.synth.writers import OUTPUT_FILES, SUMMARY, VIDEO, GroundTruthWriter, write_summary


class OutputExistsError(Exception):
    """The output folder holds files and overwriting was not allowed."""


def prepare_output(out_dir: Path, overwrite: bool) -> None:
    """Create the folder; refuse a non-empty one unless `overwrite`, then mark it incomplete."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not overwrite:
            raise OutputExistsError(f"{out_dir} is not empty; choose another folder or pass --overwrite")
        # the summary marks a complete dataset: remove it first so a failed rerun never looks complete
        with contextlib.suppress(FileNotFoundError):
            (out_dir / SUMMARY).unlink()
        leftovers = [out_dir / name for name in OUTPUT_FILES]
        leftovers += [p for name in OUTPUT_FILES for p in out_dir.glob(f".{name}.partial-*")]  # interrupted runs
        for path in leftovers:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def generate(config: SynthConfig, out_dir: str | Path, *, overwrite: bool = False, progress: bool = False,
             crf: int = DEFAULT_CRF, args: dict[str, Any] | None = None) -> dict:
    """Render `config.frames` frames to ``video.mp4`` and write every ground-truth file; return the summary."""
    config.validate()
    out = Path(out_dir)
    prepare_output(out, overwrite)
    start = time.perf_counter()
    gen = SynthGenerator(config)
    truth = GroundTruthWriter(out, gen)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=config.frames, unit="frame", desc="sipec synth")
    try:
        with Mp4Writer(out / VIDEO, config.width, config.height, config.fps, crf=crf) as video:
            for frame in gen.frames():
                video.write(frame.image)
                truth.add(frame)
                if bar is not None:
                    bar.update(1)
        truth.write_labels()
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    summary = truth.summary(args or {"config": config.to_json(), "crf": crf}, seconds, video.frames_written)
    write_summary(out, summary)
    return summary
