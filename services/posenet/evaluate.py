"""`sipec evaluate posenet`: keypoint error of an exported model on the held-out images.

Reports, in pixels of the ORIGINAL image: RMSE over all labelled keypoints, RMSE over those predicted with
confidence >= p-cutoff (as DeepLabCut reports), PCK at a pixel threshold, and RMSE per keypoint. The test set
is the training split recorded in the model's metadata (same mode, fraction and seed), or another one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from services.posenet.batches import crop_batch
from services.posenet.data import DataError, PoseData, load_samples
from services.posenet.predict import estimate_crops, to_frame
from services.posenet.split import split_samples


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-repo", required=True, help="model repository")
    p.add_argument("--model-name", default="posenet", help="model name (default posenet)")
    p.add_argument("--data", default=None, help="labelled poses (default: the training data in the metadata)")
    p.add_argument("--split", default=None,
                   help="test set: 'model' (the training split, default), 'all', random, last or fold:i/n")
    p.add_argument("--test-fraction", type=float, default=None, help="with --split random|last")
    p.add_argument("--split-seed", type=int, default=None, help="with --split random|fold")
    p.add_argument("--pcutoff", type=float, default=0.6, help="confidence cut-off for the second RMSE (DLC: 0.6)")
    p.add_argument("--pck-px", type=float, default=5.0, help="PCK threshold in original-image pixels")
    p.add_argument("--json", default=None, help="also write the metrics as JSON to this file")
    p.add_argument("--predictions", default=None,
                   help="write test predictions: .csv / .h5 (DeepLabCut layout), .slp (SLEAP) or .nwb (ndx-pose)")


def keypoint_metrics(pred: np.ndarray, true: np.ndarray, names: list[str], pcutoff: float, pck_px: float
                     ) -> dict[str, Any]:
    """pred (N, K, 3) and true (N, K, 2) in original pixels -> the metrics dictionary."""
    from sipec.metrics import pck, rmse

    err, n = rmse(pred[..., :2], true)
    confident = np.where((pred[..., 2:3] >= pcutoff), pred[..., :2], np.nan)
    err_p, n_p = rmse(confident, np.where(np.isfinite(confident), true, np.nan))
    per_kp = {name: rmse(pred[:, k, :2], true[:, k])[0] for k, name in enumerate(names)}
    return {"rmse_px": err, "n_keypoints": n, "rmse_pcutoff_px": err_p, "n_pcutoff": n_p, "pcutoff": pcutoff,
            f"pck@{pck_px:g}px": pck(pred[..., :2], true, pck_px), "rmse_per_keypoint_px": per_kp,
            "n_animals": int(len(true))}


def evaluate(backend: Any, data: PoseData, test_idx: list[int], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (N, K, 3) and true (N, K, 2) keypoints in original-image pixels."""
    samples = [data.samples[i] for i in test_idx]
    crops, mats = crop_batch(samples, size)
    kp, _ = estimate_crops(backend, crops)
    return to_frame(kp, mats), np.stack([s.keypoints for s in samples])


def _test_indices(args: argparse.Namespace, data: PoseData, info: dict) -> list[int]:
    split = info.get("training", {}).get("data", {}).get("split", {})
    mode = args.split or "model"
    if mode == "all":
        return list(range(len(data.samples)))
    if mode == "model":
        if not split:
            raise ValueError("the model's metadata records no split: pass --split")
        mode, fraction, seed = split["mode"], split["test_fraction"], split["seed"]
    else:
        fraction = args.test_fraction if args.test_fraction is not None else split.get("test_fraction", 0.05)
        seed = args.split_seed if args.split_seed is not None else split.get("seed", 0)
    return split_samples(data.samples, fraction, seed, mode)[1]


def run_evaluate(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.serving.backends import LocalBackend
    from sipec.serving.errors import NotFound

    if not Path(args.model_repo).is_dir():
        raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    backend = LocalBackend(args.model_repo, args.model_name)
    try:
        meta = backend.metadata()
    except NotFound as exc:
        raise CliError(str(exc)) from exc
    info = meta.info
    path = args.data or info.get("training", {}).get("data", {}).get("path")
    if not path:
        raise CliError("--data: the model's metadata names no training data; pass --data")
    try:
        data = load_samples(path)
    except DataError as exc:
        raise CliError(str(exc)) from exc
    if data.keypoint_names != info.get("keypoint_names"):
        raise CliError(f"{path}: keypoints {data.keypoint_names} differ from the model's {info.get('keypoint_names')}")
    try:
        test_idx = _test_indices(args, data, info)
    except ValueError as exc:
        raise CliError(f"--split: {exc}") from exc
    if not test_idx:
        raise CliError(f"{path}: the split leaves no test image")
    pred, true = evaluate(backend, data, test_idx, int(info["input"]["height"]))
    result = keypoint_metrics(pred, true, data.keypoint_names, args.pcutoff, args.pck_px)
    result.update(model=f"{meta.name}/{meta.version}", data=str(path))
    text = json.dumps(_finite(result), indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    if args.predictions:
        _write_predictions(Path(args.predictions), data, test_idx, pred)
    backend.close()
    return 0


def _finite(value: Any) -> Any:
    """NaN -> None, so the JSON is valid (e.g. no keypoint above the p-cutoff)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _write_predictions(path: Path, data: PoseData, test_idx: list[int], pred: np.ndarray) -> None:
    from services.posenet.outputs import write_dlc, write_predictions_slp

    samples = [data.samples[i] for i in test_idx]
    sources = list(dict.fromkeys(s.source for s in samples))
    inds = list(dict.fromkeys(s.individual for s in samples))
    arr = np.full((len(sources), len(inds), len(data.keypoint_names), 3), np.nan)
    for s, p in zip(samples, pred, strict=True):
        arr[sources.index(s.source), inds.index(s.individual)] = p
    if path.suffix in (".slp", ".nwb"):
        frames = [int(s.rsplit("#", 1)[1]) if "#" in s else i for i, s in enumerate(sources)]
        video = sources[0].rsplit("#", 1)[0] if "#" in sources[0] else ""
        write_predictions_slp(path, arr, frames, data.keypoint_names, [i or "animal" for i in inds], video,
                              samples[0].frame_size)
    else:
        write_dlc(path, arr, data.keypoint_names, sources, None if inds == [""] else inds)
