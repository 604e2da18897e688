"""`sipec train depth3d`: fit the 3D-from-one-camera model and export it into a model repository.

The model (Isomap + least squares, :mod:`services.tracker.depth3d`) becomes a TensorFlow SavedModel
(:mod:`services.tracker.model`) in the repository layout every module uses:

```
<repo>/<name>/<version>/saved_model.pb, variables/     serving_default: features (N, 3) -> position (N, 3)
                        assets/sipec.json              metadata (module tracker, architecture, input, training)
                        assets/depth3d.npz             the same fitted arrays, plain .npz (no pickle)
```

TF Serving, `sipec serve model-server` and the tracker's local backend serve it like any network.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from services.tracker import depth3d
from services.tracker.data import PositionsData, load_positions

PARAMS_FILE = "depth3d.npz"


def depth3d_metadata(data: PositionsData, params: depth3d.Depth3DParams, args: argparse.Namespace,
                     started: float, train_rmse: np.ndarray) -> dict:
    from services.tracker.model import ARCHITECTURE, INPUT_NAME, OUTPUT_NAME
    from sipec.training import training_summary

    w, h = data.image_size or (0, 0)
    return {
        "module": "tracker",
        "architecture": ARCHITECTURE,
        "task": "depth3d",
        "input": {"height": h, "width": w, "channels": 0, "name": INPUT_NAME,
                  "features": list(depth3d.INPUT_NAMES),
                  "description": "per instance: visible mask area (pixels), mask centre of mass u, v (pixels)"},
        "outputs": {OUTPUT_NAME: list(depth3d.OUTPUT_NAMES)},
        "class_names": [],
        "isomap": {"components": int(params.projection.shape[1]), "neighbors": int(params.n_neighbors),
                   "fit_rows": params.fit_size},
        "room": list(data.room) if data.room else None,
        "params_file": f"assets/{PARAMS_FILE}",
        "training": training_summary(args, started=started, data={
            "positions": str(args.positions), "rows": int(data.area_uv.shape[0]), "rows_without_mask": data.dropped,
            "train_rmse": {k: float(v) for k, v in zip(depth3d.OUTPUT_NAMES, train_rmse, strict=True)}}),
    }


def train_depth3d(args: argparse.Namespace) -> Path:
    """Fit on --positions, export into --out; returns the version directory."""
    from sipec.cli import CliError
    from sipec.data.atomic import atomic_path
    from sipec.serving.errors import InvalidInput
    from sipec.serving.repository import ModelRepository, check_model_name

    try:
        check_model_name(args.model_name)
    except InvalidInput as exc:
        raise CliError(f"--model-name: {exc}") from None
    if args.neighbors < 2 or args.components < 1 or args.isomap_rows < 20:
        raise CliError("--neighbors must be >= 2, --components >= 1 and --isomap-rows >= 20")
    started = time.time()
    try:
        data = load_positions(args.positions)
    except ValueError as exc:
        raise CliError(f"--positions: {exc}") from None
    try:
        params = depth3d.fit(data.area_uv, data.xyz, n_neighbors=args.neighbors, n_components=args.components,
                             max_fit=args.isomap_rows, seed=args.seed)
    except ValueError as exc:
        raise CliError(f"--positions {args.positions}: {exc}") from None
    train_rmse = depth3d.rmse_per_axis(depth3d.predict(params, data.area_uv), data.xyz)

    from services.tracker.model import build_depth3d_model

    model = build_depth3d_model(params)
    repo = ModelRepository(args.out)
    meta = depth3d_metadata(data, params, args, started, train_rmse)
    try:
        version = repo.export(model, args.model_name, meta, version=args.version)
    except FileExistsError as exc:
        raise CliError(f"--version: {exc}") from None
    with atomic_path(version.path / "assets" / PARAMS_FILE) as tmp, open(tmp, "wb") as fh:
        params.save(fh)
    print(f"depth3d: {data.area_uv.shape[0]} rows from {args.positions}; training RMSE x {train_rmse[0]:.4f}, "
          f"y {train_rmse[1]:.4f}, z {train_rmse[2]:.4f}; exported {version.path}", flush=True)
    return version.path


def add_depth3d_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--positions", required=True, metavar="CSV",
                   help="positions CSV: frame, identity, x, y, z, u, v, area (sipec synth's positions_3d.csv); "
                        "camera.json beside it gives the image size")
    p.add_argument("--out", required=True, metavar="REPO", help="model repository to export the model into")
    p.add_argument("--model-name", default="depth3d", help="model name in the repository (default depth3d)")
    p.add_argument("--version", type=int, default=None, help="version number to write (default: next free)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the Isomap's row sample (default 0)")
    p.add_argument("--neighbors", type=int, default=depth3d.N_NEIGHBORS,
                   help=f"Isomap neighbours (default {depth3d.N_NEIGHBORS})")
    p.add_argument("--components", type=int, default=depth3d.N_COMPONENTS,
                   help=f"Isomap components (default {depth3d.N_COMPONENTS}, as in the paper)")
    p.add_argument("--isomap-rows", type=int, default=depth3d.MAX_FIT,
                   help=f"rows the Isomap is fitted on, drawn at random; its cost grows with their square "
                        f"(default {depth3d.MAX_FIT}; every row trains the least squares)")
