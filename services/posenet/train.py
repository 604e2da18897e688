"""`sipec train posenet`: read labelled poses, split, train the heatmap network, export it."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from services.posenet.batches import make_dataset
from services.posenet.crops import Augment
from services.posenet.data import DataError, load_samples
from services.posenet.model import OUTPUT_NAME, OUTPUT_STRIDE, build_posenet, export_posenet, masked_heatmap_loss
from services.posenet.split import split_samples

DEFAULT_MODEL = "posenet"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sipec.training import add_training_arguments

    p.add_argument("--data", required=True,
                   help="labelled poses: DeepLabCut project/folder/CollectedData CSV or H5, SLEAP .slp, "
                        "COCO keypoints .json, or a `sipec synth` folder")
    add_training_arguments(p, DEFAULT_MODEL, epochs=60, batch_size=8)
    p.add_argument("--backbone", default="small", choices=("small", "resnet50", "efficientnetb0"),
                   help="small (CPU) or the paper's ResNet-50 / EfficientNet-B0 (GPU)")
    p.add_argument("--width", type=int, default=32, help="channels of the small backbone's first stage")
    p.add_argument("--input-size", type=int, default=128, help="crop side in pixels, multiple of 32")
    p.add_argument("--sigma", type=float, default=2.0, help="Gaussian target sigma in heatmap cells")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (cosine decay to 1%%)")
    p.add_argument("--test-fraction", type=float, default=0.05, help="held-out images (DLC: 0.05)")
    p.add_argument("--split", default="random", help="random | last | fold:i/n (see evaluate)")
    p.add_argument("--split-seed", type=int, default=None, help="seed of the split (default --seed)")
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")


def train_model(data: Any, train_idx: list[int], args: argparse.Namespace, weights: str | None) -> tuple[Any, Any]:
    """Build and fit; returns (model, history)."""
    import keras

    model = build_posenet(len(data.keypoint_names), args.input_size, args.backbone, weights, small_width=args.width)
    samples = [data.samples[i] for i in train_idx]
    ds = make_dataset(samples, args.input_size, OUTPUT_STRIDE, args.batch_size, args.sigma,
                      None if args.no_augment else Augment(), args.seed)
    steps = max(1, args.epochs * len(ds))
    lr = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss={OUTPUT_NAME: masked_heatmap_loss})

    class _Dict(keras.utils.PyDataset):
        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int) -> Any:
            x, y = ds[i]
            return x, {OUTPUT_NAME: y}

        def on_epoch_end(self) -> None:
            ds.on_epoch_end()

    history = model.fit(_Dict(), epochs=args.epochs, verbose=2)
    return model, history


def run_train(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.training import resolve_weights, seed_everything, training_summary

    started = time.time()
    weights = resolve_weights(args.weights)
    if args.input_size % 32 or args.input_size < 64:
        raise CliError(f"--input-size: must be a multiple of 32 and at least 64, not {args.input_size}")
    try:
        data = load_samples(args.data)
    except DataError as exc:
        raise CliError(str(exc)) from exc
    split_seed = args.seed if args.split_seed is None else args.split_seed
    try:
        train_idx, test_idx = split_samples(data.samples, args.test_fraction, split_seed, args.split)
    except ValueError as exc:
        raise CliError(f"--split/--test-fraction: {exc}") from exc
    if not train_idx:
        raise CliError(f"{args.data}: no training images left after the split")
    seed_everything(args.seed)
    print(f"posenet: {len(train_idx)} training / {len(test_idx)} test animals from {args.data} "
          f"({data.format}, keypoints {', '.join(data.keypoint_names)})", flush=True)
    model, history = train_model(data, train_idx, args, weights)
    split = {"mode": args.split, "test_fraction": args.test_fraction, "seed": split_seed}
    meta = {
        "module": "posenet", "architecture": f"simple-baselines/{args.backbone}",
        "input": {"height": args.input_size, "width": args.input_size, "channels": 3},
        "keypoint_names": data.keypoint_names, "output_stride": OUTPUT_STRIDE,
        "crop": {"pad": 1.25, "from": "box (or labelled keypoints' box)"},
        "peaks": "argmax + log-parabola sub-pixel refinement in the service (services/posenet/peaks.py)",
        "training": training_summary(args, history, {"path": str(Path(args.data)), "format": data.format,
                                                     "train": len(train_idx), "test": len(test_idx),
                                                     "split": split}, started),
    }
    version = export_posenet(model, args.out, args.model_name, meta, args.version)
    print(f"posenet: exported {version.path}", flush=True)
    return 0
