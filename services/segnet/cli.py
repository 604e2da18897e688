"""`sipec train segnet`, `sipec evaluate segnet`, `sipec serve segnet` (TensorFlow imported lazily)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one or more sources)")
    g.add_argument("--coco", type=Path, help="COCO instances JSON (with --images)")
    g.add_argument("--via", type=Path, help="VIA project / annotations JSON (with --images), converted to COCO")
    g.add_argument("--via-class-attribute", help="VIA region attribute holding the class (default: one class)")
    g.add_argument("--images", type=Path, help="folder of the images named by the annotations' file_name")
    g.add_argument("--synth", type=Path, action="append", default=[],
                   help="a `sipec synth` output folder (annotations.json + video.mp4); repeat for several")
    g.add_argument("--flies", type=Path, help="the sleap-flies-clip folder (masks DERIVED by thresholding)")
    g.add_argument("--flies-step", type=int, default=1, help="use every N-th frame of --flies (default 1)")
    g.add_argument("--limit", type=int, default=None, help="at most this many images per source")
    g.add_argument("--image-size", type=int, default=256,
                   help="square model input, a multiple of 64; frames are letterboxed (default 256)")
    g.add_argument("--max-instances", type=int, default=8, help="most instances per image used (default 8)")


def load_data(args: argparse.Namespace) -> Any:
    """SegData of every source named on the command line; CliError on bad input."""
    from services.segnet.data import SegData, load_coco, load_flies, load_synth
    from sipec.cli import CliError

    if args.image_size % 64 or args.image_size < 64:
        raise CliError(f"--image-size must be a positive multiple of 64, got {args.image_size}")
    parts = []
    try:
        if (args.coco or args.via) and (not args.images or not args.images.is_dir()):
            raise CliError(f"--images: directory not found: {args.images} (needed with --coco / --via)")
        if args.coco:
            if not args.coco.is_file():
                raise CliError(f"--coco: file not found: {args.coco}")
            parts.append(load_coco(args.coco, args.image_size, images_dir=args.images,
                                   max_instances=args.max_instances, limit=args.limit))
        if args.via:
            import tempfile

            from services.segnet.via import via_to_coco
            from sipec.data.coco import write_coco_instances

            coco = via_to_coco(args.via, args.images, args.via_class_attribute)
            with tempfile.TemporaryDirectory() as tmp:
                write_coco_instances(Path(tmp) / "via.json", coco)
                parts.append(load_coco(Path(tmp) / "via.json", args.image_size, images_dir=args.images,
                                       max_instances=args.max_instances, limit=args.limit))
        for folder in args.synth:
            parts.append(load_synth(folder, args.image_size, args.max_instances, args.limit))
        if args.flies:
            parts.append(load_flies(args.flies, args.image_size, min(args.max_instances, 2), args.limit,
                                    args.flies_step))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if not parts:
        raise CliError("no data: give --coco/--via with --images, --synth DIR or --flies DIR")
    names = {tuple(p.class_names) for p in parts}
    if len(names) > 1:
        raise CliError(f"the data sources have different classes: {sorted(names)}")
    data = SegData.concat(parts)
    if len(data) == 0:
        raise CliError("the data sources hold no images")
    return data


def _split(n: int, fraction: float, flag: str) -> int:
    from sipec.cli import CliError

    if not 0.0 < fraction <= 1.0:
        raise CliError(f"{flag} must be in (0, 1], got {fraction}")
    return max(1, int(round(n * fraction)))


def _config(args: argparse.Namespace, num_classes: int) -> Any:
    from services.segnet.model import BACKBONES, MaskRCNNConfig, paper_config
    from sipec.cli import CliError

    if args.backbone not in BACKBONES:
        raise CliError(f"--backbone must be one of {', '.join(BACKBONES)}")
    if args.backbone == "mobilenetv2":
        s = args.image_size / 256
        return MaskRCNNConfig(num_classes=num_classes, image_size=args.image_size, max_instances=args.max_instances,
                              anchor_sizes=tuple(max(8, int(a * s)) for a in (16, 32, 64, 128, 256)))
    return paper_config(num_classes, args.backbone, args.image_size)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--backbone", default="mobilenetv2",
                   help="mobilenetv2 (alpha 0.35, CPU) | resnet50 | resnet101 (the paper's, GPU); default mobilenetv2")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="stop training at the first step after this many minutes")
    g.add_argument("--no-augment", action="store_true", help="no flips/rotation/scale/brightness/contrast")


# --- train ---------------------------------------------------------------------------------------------
def register_train(sub: Any) -> None:
    from sipec.training import add_training_arguments

    p = sub.add_parser("segnet", help="train SegNet (Mask R-CNN) and export it to a model repository")
    _add_data_arguments(p)
    _add_model_arguments(p)
    p.add_argument("--train-fraction", type=float, default=1.0,
                   help="train on the first fraction of the images (default 1.0; evaluate on the rest)")
    add_training_arguments(p, "segnet", epochs=20, batch_size=4)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from services.segnet.train import export_model, train_model
    from sipec.training import resolve_weights, training_summary

    started = time.time()
    data = load_data(args)
    n_train = _split(len(data), args.train_fraction, "--train-fraction")
    train = data.subset(np.arange(n_train))
    weights = resolve_weights(args.weights)
    weights_file = weights if weights not in (None, "imagenet") else None
    config = _config(args, len(data.class_names))
    result = train_model(train, config, args.epochs, args.batch_size, args.seed,
                         backbone_weights="imagenet" if weights == "imagenet" else None, weights_file=weights_file,
                         lr=args.lr, augment_data=not args.no_augment,
                         max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    summary = training_summary(args, result.history, {"images": len(train), "first_images": n_train,
                                                      "instances": int((train.classes > 0).sum())}, started)
    version = export_model(result.model, Path(args.out), args.model_name, data.class_names, summary, args.version)
    print(f"segnet: exported {version.path} (trained on {len(train)} images in {result.seconds:.0f}s)")
    return 0


# --- evaluate ------------------------------------------------------------------------------------------
def register_evaluate(sub: Any) -> None:
    p = sub.add_parser("segnet", help="SegNet mAP@0.5, mean IoU and Dice; cross-validation; label-count ablation")
    _add_data_arguments(p)
    _add_model_arguments(p)
    p.add_argument("--model-repo", type=Path, help="evaluate this exported model (newest version of --model-name)")
    p.add_argument("--model-name", default="segnet")
    p.add_argument("--eval-fraction", type=float, default=1.0,
                   help="evaluate on the last fraction of the images (default 1.0 = all)")
    p.add_argument("--folds", type=int, default=0, help="k-fold cross-validation: train k models (contiguous folds)")
    p.add_argument("--train-sizes", default="",
                   help="label-count ablation: e.g. 3,10,30 training images each, tested on --eval-fraction")
    p.add_argument("--epochs", type=int, default=20, help="epochs of each model trained by --folds/--train-sizes")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the results here")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from services.segnet.evaluate import backend_predict_fn, evaluate, folds, model_predict_fn, summarize, table
    from services.segnet.train import train_model
    from sipec.cli import CliError

    data = load_data(args)
    results: dict[str, Any] = {"data": data.sources[0].split("#")[0] if data.sources else "", "images": len(data)}

    def trained(train_idx: np.ndarray) -> Any:
        config = _config(args, len(data.class_names))
        res = train_model(data.subset(train_idx), config, args.epochs, args.batch_size, args.seed,
                          lr=args.lr, augment_data=not args.no_augment,
                          max_seconds=args.max_minutes * 60 if args.max_minutes else None)
        return model_predict_fn(res.model)

    if args.folds:
        try:
            splits = folds(len(data), args.folds)
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        rows = []
        for k, (tr, te) in enumerate(splits):
            rows.append({"fold": k + 1, **evaluate(trained(tr), data.subset(te))})
        print(table(rows, "fold"))
        results["folds"] = rows
        results["folds_summary"] = summarize(rows)
        print(json.dumps(results["folds_summary"]))
    if args.train_sizes:
        try:
            sizes = [int(s) for s in args.train_sizes.split(",") if s.strip()]
        except ValueError as exc:
            raise CliError(f"--train-sizes: expected comma-separated integers, got {args.train_sizes!r}") from exc
        n_test = _split(len(data), args.eval_fraction if args.eval_fraction < 1 else 0.3, "--eval-fraction")
        pool = np.arange(len(data) - n_test)
        test = data.subset(np.arange(len(data) - n_test, len(data)))
        rng = np.random.default_rng(args.seed)
        rows = []
        for n in sizes:
            if n < 1 or n > len(pool):
                raise CliError(f"--train-sizes: {n} is not between 1 and the {len(pool)} training images")
            rows.append({"train_images": n, **evaluate(trained(np.sort(rng.choice(pool, n, replace=False))), test)})
        print(table(rows, "train_images"))
        results["train_sizes"] = rows
    if args.model_repo:
        from sipec.serving.backends import LocalBackend

        if not args.model_repo.is_dir():
            raise CliError(f"--model-repo: directory not found: {args.model_repo}")
        n_test = _split(len(data), args.eval_fraction, "--eval-fraction")
        test = data.subset(np.arange(len(data) - n_test, len(data)))
        backend = LocalBackend(args.model_repo, args.model_name)
        try:
            _wait_ready(backend)
            size = int(backend.metadata().info.get("input", {}).get("height", 0))
            if size != args.image_size:
                raise CliError(f"--image-size {args.image_size} differs from the model's input size {size}")
            row = {"model": f"{args.model_name} v{backend.metadata().version}",
                   **evaluate(backend_predict_fn(backend), test)}
        finally:
            backend.close()
        print(table([row], "model"))
        results["model"] = row
    if not (args.folds or args.train_sizes or args.model_repo):
        raise CliError("nothing to evaluate: give --model-repo, --folds K or --train-sizes N,M,...")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"segnet: wrote {args.json}")
    return 0


def _wait_ready(backend: Any, timeout_s: float = 120.0) -> None:
    from sipec.cli import CliError

    deadline = time.time() + timeout_s
    while not backend.ready():
        if time.time() > deadline:
            raise CliError(f"model {backend.model_name!r} did not load within {timeout_s:.0f}s")
        time.sleep(0.2)


# --- serve ---------------------------------------------------------------------------------------------
def register_serve(sub: Any) -> None:
    from sipec.serving.cli import add_server_arguments
    from sipec.serving.module import add_backend_arguments

    p = sub.add_parser("segnet", help="serve SegNet over gRPC (sipec.v1.SegNet)")
    add_server_arguments(p, 50051)
    add_backend_arguments(p, "segnet")
    p.add_argument("--max-batch", type=int, default=8, help="most stream frames per backend call (default 8)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest frame accepted (default 4096^2)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from services.segnet.service import serve

    return serve(args)
