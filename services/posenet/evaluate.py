"""`sipec evaluate posenet`: keypoint error of an exported model on the held-out images.

Reports, in pixels of the ORIGINAL image: RMSE over all labelled keypoints, RMSE over those predicted with
confidence >= p-cutoff (as DeepLabCut reports), PCK at a pixel threshold, and RMSE per keypoint; optionally the
same on the training images. The test set is the training split recorded in the model's metadata (same mode,
fraction and seed), or another one; crops are cut as the model was trained (``crop`` in its metadata: centre
source and side), unless overridden. Inference goes through the exported SavedModel (a LocalBackend) and the
service's own decoding (:mod:`services.posenet.predict`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from services.posenet.batches import crop_batch
from services.posenet.data import CENTERS, CropSpec, DataError, LabelSet, PoseSample, cut_samples, load_labels
from services.posenet.predict import estimate_crops, to_frame
from services.posenet.split import split_samples

PREDICTION_SUFFIXES = (".csv", ".h5", ".slp", ".nwb")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from services.posenet.protocols import add_protocol_arguments

    p.add_argument("--model-repo", default=None,
                   help="model repository (required unless --folds or --train-sizes train the models here)")
    p.add_argument("--model-name", default="posenet", help="model name (default posenet)")
    p.add_argument("--data", default=None, help="labelled poses (default: the training data in the metadata)")
    p.add_argument("--split", default=None,
                   help="test set: 'model' (the training split, default), 'all', or a split as in train (random, "
                        "last, fold:i/n, block:i/n, subset:N, file:SPLIT.json)")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="with --split random|last|subset, and --train-sizes (default there 0.2)")
    p.add_argument("--split-seed", type=int, default=None, help="with --split random|fold")
    p.add_argument("--crop-center", default=None, choices=CENTERS,
                   help="crop centre (default: the model's, from its metadata)")
    p.add_argument("--crop-side", type=float, default=None, help="crop side in frame pixels (default: the model's)")
    p.add_argument("--train-metrics", action="store_true",
                   help="also report the metrics on the training images (DeepLabCut reports train and test error)")
    p.add_argument("--pcutoff", type=float, default=0.6, help="confidence cut-off for the second RMSE (DLC: 0.6)")
    p.add_argument("--pck-px", type=float, default=5.0, help="PCK threshold in original-image pixels")
    p.add_argument("--json", default=None, help="also write the metrics as JSON to this file")
    p.add_argument("--predictions", default=None,
                   help="write test predictions: .csv / .h5 (DeepLabCut layout), .slp (SLEAP) or .nwb (ndx-pose)")
    add_protocol_arguments(p)


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


def evaluate(backend: Any, samples: list[PoseSample], size: int, batch_size: int = 32
             ) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (N, K, 3) and true (N, K, 2) keypoints in original-image pixels, batch by batch."""
    preds, trues = [], []
    for i in range(0, len(samples), batch_size):
        chunk = samples[i:i + batch_size]
        crops, mats = crop_batch(chunk, size)
        kp, _ = estimate_crops(backend, crops)
        preds.append(to_frame(kp, mats))
        trues.append(np.stack([s.keypoints for s in chunk]))
    return np.concatenate(preds), np.concatenate(trues)


def split_indices(args: argparse.Namespace, labels: LabelSet, info: dict) -> tuple[list[int], list[int]]:
    """(train, test) animal indices: the model's recorded split, 'all' (no training part) or a new one."""
    split = info.get("training", {}).get("data", {}).get("split", {})
    mode = args.split or "model"
    if mode == "all":
        return [], list(range(len(labels.animals)))
    if mode == "model":
        if not split:
            raise ValueError("the model's metadata records no split: pass --split")
        mode, fraction, seed = split["mode"], split["test_fraction"], split["seed"]
    else:
        fraction = args.test_fraction if args.test_fraction is not None else split.get("test_fraction", 0.05)
        seed = args.split_seed if args.split_seed is not None else split.get("seed", 0)
    return split_samples(labels.animals, fraction, seed, mode)


def crop_spec(args: argparse.Namespace, info: dict) -> CropSpec:
    """The model's crop geometry, with the command line's overrides."""
    crop = info.get("crop", {})
    center = args.crop_center or crop.get("center")
    side = args.crop_side if args.crop_side is not None else crop.get("side_px")
    if center is None or (center != "frame" and not side):
        raise ValueError("the model's metadata records no crop geometry: pass --crop-center and --crop-side")
    return CropSpec(str(center), float(side or 0.0))


def run_evaluate(args: argparse.Namespace) -> int:
    from services.posenet.protocols import run_protocols
    from sipec.cli import CliError

    if args.folds or args.train_sizes:
        return run_protocols(args)
    if not args.model_repo:
        raise CliError("nothing to evaluate: give --model-repo, --folds K or --train-sizes N,M,...")
    result = evaluate_repo(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def evaluate_repo(args: argparse.Namespace) -> dict[str, Any]:
    """The metrics of ``args.model_repo``'s model on the test images (NaN written as None)."""
    from sipec.cli import CliError
    from sipec.serving.backends import LocalBackend
    from sipec.serving.errors import NotFound

    if not Path(args.model_repo).is_dir():
        raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    if args.predictions and Path(args.predictions).suffix not in PREDICTION_SUFFIXES:
        raise CliError(f"--predictions: {args.predictions}: the suffix must be one of "
                       f"{', '.join(PREDICTION_SUFFIXES)} (DeepLabCut CSV/H5, SLEAP, NWB)")
    backend = LocalBackend(args.model_repo, args.model_name, poll_s=0)
    try:
        try:
            meta = backend.metadata()
        except NotFound as exc:
            raise CliError(str(exc)) from exc
        info = meta.info
        path = args.data or info.get("training", {}).get("data", {}).get("path")
        if not path:
            raise CliError("--data: the model's metadata names no training data; pass --data")
        try:
            spec = crop_spec(args, info)
        except ValueError as exc:
            raise CliError(f"--crop-center/--crop-side: {exc}") from exc
        try:
            labels = load_labels(path)
            if labels.keypoint_names != info.get("keypoint_names"):
                raise CliError(f"{path}: keypoints {labels.keypoint_names} differ from the model's "
                               f"{info.get('keypoint_names')}")
            try:
                train_idx, test_idx = split_indices(args, labels, info)
            except ValueError as exc:
                raise CliError(f"--split: {exc}") from exc
            if not test_idx:
                raise CliError(f"{path}: the split leaves no test image")
            test = cut_samples(labels, spec, test_idx, margin=1.05)
            train = cut_samples(labels, spec, train_idx, margin=1.05) if args.train_metrics and train_idx else []
        except DataError as exc:
            raise CliError(str(exc)) from exc
        size = int(info["input"]["height"])
        pred, true = evaluate(backend, test, size)
        result = keypoint_metrics(pred, true, labels.keypoint_names, args.pcutoff, args.pck_px)
        result.update(model=f"{meta.name}/{meta.version}", data=str(path), split=args.split or "model",
                      crop=spec.to_json())
        if train:
            tp, tt = evaluate(backend, train, size)
            result["train"] = keypoint_metrics(tp, tt, labels.keypoint_names, args.pcutoff, args.pck_px)
        result["test_images"] = len({s.source for s in test})
        if args.predictions:
            write_predictions(Path(args.predictions), labels.keypoint_names, test, pred)
    finally:
        backend.close()
    return _finite(result)


def _finite(value: Any) -> Any:
    """NaN -> None, so the JSON is valid (e.g. no keypoint above the p-cutoff)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_predictions(path: Path, names: list[str], samples: list[PoseSample], pred: np.ndarray) -> None:
    """Predicted keypoints (N, K, 3) of the samples, one row per image and one column group per individual:
    DeepLabCut CSV/H5 (rows named by image path or ``video#frame``), SLEAP .slp or NWB (frames of a video)."""
    from sipec.data.pose_outputs import write_dlc, write_predictions_slp

    sources = list(dict.fromkeys(s.source for s in samples))
    inds = list(dict.fromkeys(s.individual for s in samples))
    row = {s: i for i, s in enumerate(sources)}
    col = {s: i for i, s in enumerate(inds)}
    arr = np.full((len(sources), len(inds), len(names), 3), np.nan)
    for s, p in zip(samples, pred, strict=True):
        arr[row[s.source], col[s.individual]] = p
    if path.suffix in (".slp", ".nwb"):
        frames = [int(s.rsplit("#", 1)[1]) if "#" in s else i for i, s in enumerate(sources)]
        video = sources[0].rsplit("#", 1)[0] if "#" in sources[0] else ""
        write_predictions_slp(path, arr, frames, names, [i or "animal" for i in inds], video,
                              samples[0].frame_size, fps=_video_fps(video))
    else:
        write_dlc(path, arr, names, sources, None if inds == [""] else inds)


def _video_fps(video: str, default: float = 30.0) -> float:
    """Frames per second of a video file (for NWB timestamps); ``default`` when unknown."""
    import cv2

    if not video or not Path(video).is_file():
        return default
    cap = cv2.VideoCapture(video)
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    cap.release()
    return fps if fps > 0 else default
