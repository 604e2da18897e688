"""What every `sipec train <module>` shares: common flags, seeds, weights, the paper's schedules, export.

Keeps the modules' training code about their network, not about plumbing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def ensure_keras_home() -> None:
    """Keras caches (and `--weights imagenet` downloads) go inside the project unless KERAS_HOME is set."""
    os.environ.setdefault("KERAS_HOME", str(ROOT / ".tmp" / "keras"))


def add_training_arguments(p: argparse.ArgumentParser, default_model: str, epochs: int, batch_size: int) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--out", required=True, metavar="REPO", help="model repository to export the trained model into")
    g.add_argument("--model-name", default=default_model,
                   help=f"model name in the repository (default {default_model})")
    g.add_argument("--epochs", type=int, default=epochs, help=f"epochs (default {epochs})")
    g.add_argument("--batch-size", type=int, default=batch_size, help=f"batch size (default {batch_size})")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--weights", default="none",
                   help="backbone initialisation: 'imagenet' (downloads once, needs the internet), 'none' "
                        "(random), or a .weights.h5 file")
    g.add_argument("--version", type=int, default=None, help="version number to write (default: next free)")


def resolve_weights(value: str) -> str | None:
    """'imagenet' -> 'imagenet', 'none' -> None, a path -> the path (CliError if missing)."""
    from sipec.cli import CliError

    if value in ("none", "", None):
        return None
    if value == "imagenet":
        ensure_keras_home()
        return "imagenet"
    if not Path(value).is_file():
        raise CliError(f"--weights: file not found: {value} (use 'imagenet', 'none' or a .weights.h5 file)")
    return value


def seed_everything(seed: int) -> None:
    import keras

    keras.utils.set_random_seed(seed)


def paper_lr_schedule(k: float):
    """SIPEC's schedule lr_{E+1} = lr_E / k^E, as a Keras callback."""
    import keras

    return keras.callbacks.LearningRateScheduler(lambda epoch, lr: float(lr / (k ** epoch)) if epoch else float(lr))


def training_summary(args: argparse.Namespace, history: Any = None, data: dict[str, Any] | None = None,
                     started: float | None = None) -> dict[str, Any]:
    """The `training` block of assets/sipec.json: how, on what and how long it was trained."""
    summary: dict[str, Any] = {
        "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                 if k not in ("func",) and isinstance(v, str | int | float | bool | type(None) | Path)},
        "machine": f"{platform.node()} {os.cpu_count()} cores",
    }
    if started is not None:
        summary["seconds"] = round(time.time() - started, 1)
    if history is not None:
        hist = getattr(history, "history", history)
        summary["final"] = {k: float(v[-1]) for k, v in hist.items() if v}
    if data:
        summary["data"] = data
    return summary
