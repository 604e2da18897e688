"""`sipec evaluate posenet --folds K` and `--train-sizes a,b,c`: the paper's protocols for PoseNet.

Each run is an ordinary `sipec train posenet` (same options, passed with ``--train-options``) into the work
folder, with the split ``block:i/K`` (folds that keep neighbouring frames together) or ``subset:N`` (N training
images drawn from all but the last ``--test-fraction`` of the images, which every size is tested on), followed by
`sipec evaluate posenet` of that model on its own held-out images. In the ablation every size trains for as many
steps as the whole pool would (epochs scaled by pool / size): the curve measures labels, not training time.
Every finished run leaves its model and a
``<run>.json`` in the work folder; a rerun with the same data and options reuses them, so an interrupted
cross-validation resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from pathlib import Path
from typing import Any

METRICS = ("rmse_px", "rmse_pcutoff_px")
RESERVED = ("--data", "--out", "--model-name", "--split", "--split-seed", "--test-fraction", "--version")


def add_protocol_arguments(p: argparse.ArgumentParser) -> None:
    from sipec import protocols

    g = p.add_argument_group("protocols (train and evaluate here; --data required)")
    protocols.add_arguments(g, "images", "--test-fraction (default 0.2)")
    g.add_argument("--repeats", type=int, default=1,
                   help="--train-sizes: trainings per size with seeds 0..R-1 (other subsets, other initialisations)")
    g.add_argument("--train-options", default="",
                   help="options of each `sipec train posenet`, quoted, e.g. \"--epochs 60 --input-size auto\"")
    g.add_argument("--work", default="sipec-evaluate-posenet",
                   help="folder for the trained models and per-run results (default ./sipec-evaluate-posenet); "
                        "finished runs found there are reused")


def run_protocols(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.protocols import equal_steps_epochs, peak_point, plot_ablation, progress, summarize

    if not args.data:
        raise CliError("--folds/--train-sizes: give --data (the labelled poses to train and test on)")
    if args.model_repo:
        raise CliError("--model-repo evaluates one model; --folds/--train-sizes train their own (in --work)")
    try:
        options = shlex.split(args.train_options)
    except ValueError as exc:
        raise CliError(f"--train-options: {exc}") from exc
    clash = [o for o in options if o.split("=", 1)[0] in RESERVED]
    if clash:
        raise CliError(f"--train-options: {', '.join(clash)} is set by the protocol; leave it out")
    sizes: list[int] = args.train_sizes
    if args.folds and args.folds < 2:
        raise CliError(f"--folds: need at least 2, not {args.folds}")
    if args.repeats < 1:
        raise CliError(f"--repeats: must be at least 1, not {args.repeats}")
    test_fraction = 0.2 if args.test_fraction is None else args.test_fraction
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    runs: list[tuple[str, str, int, dict[str, Any], list[str]]] = []  # (name, split, seed, row fields, options)
    for k in range(args.folds):
        runs.append((f"fold{k + 1}of{args.folds}", f"block:{k}/{args.folds}", 0, {"fold": k + 1}, options))
    if sizes:
        # every size gets the training steps of the whole pool: fewer labels, not less training
        epochs, pool = _epochs(options), _pool_images(args.data, test_fraction)
        for size in sizes:
            e = equal_steps_epochs(epochs, pool, size)
            for r in range(args.repeats):
                runs.append((f"size{size}_seed{r}", f"subset:{size}", r,
                             {"train_size": size, "seed": r, "epochs": e}, [*options, "--epochs", str(e)]))
    print(f"posenet: {len(runs)} trainings in {work} (train options: {args.train_options or 'the defaults'})",
          flush=True)
    rows: dict[str, dict[str, Any]] = {}
    for name, split, seed, fields, opts in progress(runs, "posenet protocol"):
        rows[name] = {**fields, **_run(args, opts, work, name, split, seed, test_fraction)}
    out: dict[str, Any] = {"data": str(args.data), "train_options": args.train_options, "work": str(work)}
    if args.folds:
        fold_rows = [rows[n] for n, s, *_ in runs if s.startswith("block:")]
        out["folds"] = fold_rows
        out["folds_summary"] = summarize(fold_rows, (*METRICS, "pck", "train_seconds"))
        out["folds_pooled_rmse_px"] = _pooled(fold_rows)
        s = out["folds_summary"]["rmse_px"]
        print(f"posenet: {args.folds}-fold test RMSE {s['mean']:.2f} +- {s['sem']:.2f} px (mean +- s.e.m.), pooled "
              f"over all test keypoints {out['folds_pooled_rmse_px']:.2f} px", flush=True)
    if sizes:
        size_rows = [rows[n] for n, s, *_ in runs if s.startswith("subset:")]
        out["train_sizes"] = size_rows
        per_size = {str(z): summarize([r for r in size_rows if r["train_size"] == z], ("rmse_px", "pck"))
                    for z in sizes}
        out["train_sizes_summary"] = per_size
        out["peak"] = peak_point(sizes, [per_size[str(z)]["rmse_px"]["mean"] for z in sizes], 0.95,
                                 lower_is_better=True)
        stem = Path(args.plot) if args.plot else (Path(args.json).with_suffix("") if args.json else work / "ablation")
        paths = plot_ablation(size_rows, "rmse_px", stem, f"PoseNet, {Path(args.data).name}: test RMSE (px)",
                              lower_is_better=True)
        out["plot"] = [str(p) for p in paths]
        print(f"posenet: RMSE within 95% of the best ({out['peak']['peak']:.2f} px) from {out['peak']['size']} "
              f"training images; plot {paths[0]}", flush=True)
    text = json.dumps(out, indent=2, default=float)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
        print(f"posenet: wrote {args.json}")
    else:
        print(text)
    return 0


def _run(args: argparse.Namespace, options: list[str], work: Path, name: str, split: str, seed: int,
         test_fraction: float) -> dict[str, Any]:
    """Train (unless a finished run with the same settings is in ``work``) and evaluate one model."""
    import keras

    from services.posenet import train
    from services.posenet.evaluate import evaluate_repo
    from sipec.cli import CliError

    record = work / f"{name}.json"
    settings = {"data": str(args.data), "split": split, "seed": seed, "test_fraction": test_fraction,
                "train_options": options}
    if record.is_file():
        try:
            saved = json.loads(record.read_text())
            if saved.get("settings") == settings:
                print(f"posenet: {name}: reusing the finished run in {record}", flush=True)
                return saved["result"]
        except ValueError:
            pass
    parser = argparse.ArgumentParser(prog="sipec train posenet", exit_on_error=False)
    train.add_arguments(parser)
    argv = ["--data", str(args.data), "--out", str(work), "--model-name", name, "--split", split,
            "--test-fraction", str(test_fraction), "--seed", str(seed), *options]
    try:
        targs = parser.parse_args(argv)
    except (argparse.ArgumentError, SystemExit) as exc:
        raise CliError(f"--train-options: {exc}") from None
    started = time.time()
    train.run_train(targs)
    seconds = time.time() - started
    keras.backend.clear_session()
    eargs = argparse.Namespace(**{**vars(args), "model_repo": str(work), "model_name": name, "split": "model",
                                  "test_fraction": None, "split_seed": None, "crop_center": None,
                                  "crop_side": None, "predictions": None})
    metrics = evaluate_repo(eargs)
    pck_key = next(k for k in metrics if k.startswith("pck@"))
    result = {"train_animals": _train_animals(work, name), "test_images": metrics["test_images"],
              "rmse_px": metrics["rmse_px"], "rmse_pcutoff_px": metrics["rmse_pcutoff_px"],
              "n_keypoints": metrics["n_keypoints"], "pck": metrics[pck_key], "pck_px": args.pck_px,
              "rmse_per_keypoint_px": metrics["rmse_per_keypoint_px"], "train_seconds": round(seconds, 1),
              "model": metrics["model"]}
    record.write_text(json.dumps({"settings": settings, "result": result}, indent=2) + "\n")
    print(f"posenet: {name}: test RMSE {result['rmse_px']:.2f} px on {result['test_images']} images "
          f"({seconds:.0f} s)", flush=True)
    return result


def _epochs(options: list[str]) -> int:
    """The epochs the training options ask for (the train command's default when they do not)."""
    from services.posenet import train

    parser = argparse.ArgumentParser(exit_on_error=False)
    train.add_arguments(parser)
    try:
        return int(parser.parse_known_args(["--data", "x", "--out", "x", *options])[0].epochs)
    except (argparse.ArgumentError, SystemExit):
        return 60


def _pool_images(data: str, test_fraction: float) -> int:
    """Images the label-count ablation draws its training sets from (all but the test block)."""
    from services.posenet.data import load_labels

    n = len({a.source for a in load_labels(data).animals})
    return n - max(1, int(round(n * test_fraction)))


def _train_animals(work: Path, name: str) -> int | None:
    """Training animals (labelled instances) recorded in the newest exported version's metadata."""
    from sipec.serving.repository import ModelRepository

    info = ModelRepository(work).get(name).metadata()
    return info.get("training", {}).get("data", {}).get("train")


def _pooled(rows: list[dict[str, Any]]) -> float:
    """RMSE over the test keypoints of all folds together."""
    num = sum(r["rmse_px"] ** 2 * r["n_keypoints"] for r in rows if r.get("rmse_px") is not None)
    den = sum(r["n_keypoints"] for r in rows if r.get("rmse_px") is not None)
    return math.sqrt(num / den) if den else float("nan")
