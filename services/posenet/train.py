"""`sipec train posenet`: read labelled poses, split by image, crop, train the heatmap network, export it.

The crop geometry (centre source and side in frame pixels), the split and the mirror pairs go into the
model's metadata (``assets/sipec.json``), so that `sipec evaluate posenet` cuts the same crops of the same
held-out images, and a pipeline knows what crop size the model expects (``crop.side_px``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from services.posenet.batches import make_dataset
from services.posenet.crops import Augment, left_right_pairs, patch_margin
from services.posenet.data import (
    CENTERS,
    INPUT_MIN,
    CropSpec,
    DataError,
    PoseSample,
    auto_input_size,
    auto_side,
    cut_samples,
    load_labels,
)
from services.posenet.model import (
    BACKBONES,
    LOSSES,
    OUTPUT_NAME,
    OUTPUT_STRIDE,
    build_posenet,
    export_posenet,
    heatmap_loss,
)
from services.posenet.split import split_samples
from sipec.protocols import natural_key

DEFAULT_MODEL = "posenet"
DEFAULT_INPUT = 0   # auto: chosen from the crop side and the keypoints' spacing (docs/benchmarks.md, PoseNet)
DEFAULT_LOSS = "bce"


def _input_size(text: str) -> int:
    """--input-size: pixels, or "auto" (0: chosen from the data)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected pixels (a multiple of 32) or auto, not {text!r}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    from sipec.training import add_training_arguments

    p.add_argument("--data", required=True,
                   help="labelled poses: DeepLabCut project/folder/CollectedData CSV or H5, SLEAP .slp, "
                        "COCO keypoints .json, a `sipec synth` folder, or the sleap-flies-clip folder")
    add_training_arguments(p, DEFAULT_MODEL, epochs=60, batch_size=4)
    g = p.add_argument_group("network")
    g.add_argument("--backbone", default="small", choices=BACKBONES,
                   help="small (residual CNN for CPUs, default) or the paper's ResNet-50 / EfficientNet-B0 (GPUs)")
    g.add_argument("--width", type=int, default=32, help="channels of the small backbone's first stage (default 32)")
    g.add_argument("--stride", choices=("16", "32", "auto"), default="16",
                   help="output stride of the small backbone: 16 (4 stages, default), 32 (a fifth stage: about twice "
                        "the receptive field), or auto: 32 above 192 px input")
    g.add_argument("--input-size", type=_input_size, default=DEFAULT_INPUT,
                   help="network input side in pixels, a multiple of 32, or auto (default): from the crop side and "
                        "the keypoints' spacing, 128 to 256, printed with the reason (with the default loss, auto "
                        "beat a fixed 128 on both shared DeepLabCut projects; docs/benchmarks.md)")
    g.add_argument("--sigma", type=float, default=2.0, help="Gaussian target sigma in heatmap cells (default 2)")
    g.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, cosine-decayed to 1%% (default 2e-3)")
    g.add_argument("--loss", choices=LOSSES, default=DEFAULT_LOSS,
                   help="heatmap loss: bce (the SIPEC paper's cross-entropy on sigmoid heatmaps, default) or mse "
                        "(Simple Baselines'); both ignore unlabelled keypoints (docs/benchmarks.md compares them: "
                        "with inputs of 256 px the MSE failed on some folds)")
    g.add_argument("--fg-weight", type=float, default=10.0,
                   help="weigh heatmap pixels by 1 + W x target in the loss, so that training leaves the 'all "
                        "heatmaps zero' plateau (default 10; 0: plain Simple Baselines MSE)")
    g = p.add_argument_group("crops and augmentation")
    g.add_argument("--crop-center", default="auto", choices=("auto", *CENTERS),
                   help="crop centre: auto (default: mask where the labels have masks, as `sipec analyze` crops "
                        "around SegNet's mask centres, else box), box (the annotation's box; the labelled "
                        "keypoints' box where the format has none), mask (centre of mass of the mask: COCO "
                        "segmentation, synth, the flies' derived masks), keypoints (the labelled keypoints' box), "
                        "frame (the whole image, padded square)")
    g.add_argument("--crop-side", type=float, default=0.0,
                   help="crop side in frame pixels (default: 1.25 x the 95th percentile of the training animals' "
                        "size, rounded up to 8); the crop is resampled to the input size")
    g.add_argument("--rotation", type=float, default=30.0, help="random rotation range in degrees (default 30)")
    g.add_argument("--flip", choices=("auto", "on", "off"), default="auto",
                   help="random left-right mirror, swapping left/right keypoints found by name; auto: on when "
                        "such pairs exist (default)")
    g.add_argument("--no-augment", action="store_true", help="train without augmentation")
    g = p.add_argument_group("split")
    g.add_argument("--test-fraction", type=float, default=0.05, help="held-out images (DLC's 95/5: 0.05)")
    g.add_argument("--split", default="random",
                   help="random | last | fold:i/n | block:i/n | subset:N | file:SPLIT.json, by image, not animal "
                        "(services/posenet/split.py)")
    g.add_argument("--split-seed", type=int, default=None, help="seed of the split (default --seed)")
    g.add_argument("--step", type=int, default=1,
                   help="train on every STEP-th training image only (consecutive video frames are near copies; "
                        "default 1: all). The held-out images stay as the split made them")


def make_augment(args: argparse.Namespace, keypoint_names: list[str]) -> tuple[Augment | None, list[tuple[int, int]]]:
    """The augmentation the flags ask for, and the mirror pairs found in the keypoint names."""
    pairs = left_right_pairs(keypoint_names)
    if args.no_augment:
        return None, pairs
    flip = args.flip == "on" or (args.flip == "auto" and bool(pairs))
    return Augment(rotation_deg=args.rotation, flip_pairs=tuple(pairs) if flip else None), pairs


def small_stride(args: argparse.Namespace) -> int:
    """The small backbone's output stride the flags ask for (auto: 32 above 192 px input, where 16 would leave
    a receptive field of a smaller part of the crop than at 128 px)."""
    if args.stride == "auto":
        return 32 if args.input_size > 192 else 16
    return int(args.stride)


def train_model(num_keypoints: int, samples: list[PoseSample], args: argparse.Namespace, weights: str | None,
                augment: Augment | None) -> tuple[Any, Any]:
    """Build and fit on cut samples; returns (model, history)."""
    import keras

    model = build_posenet(num_keypoints, args.input_size, args.backbone, weights, small_width=args.width,
                          heatmap_activation="sigmoid" if args.loss == "bce" else None,
                          small_stride=small_stride(args))
    ds = make_dataset(samples, args.input_size, OUTPUT_STRIDE, args.batch_size, args.sigma, augment, args.seed)
    steps = max(1, args.epochs * len(ds))
    lr = keras.optimizers.schedules.CosineDecay(args.lr, steps, alpha=0.01)
    model.compile(optimizer=keras.optimizers.Adam(lr), loss={OUTPUT_NAME: heatmap_loss(args.fg_weight, args.loss)})
    history = model.fit(ds, epochs=args.epochs, verbose=2)
    return model, history


def run_train(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.training import resolve_weights, seed_everything, training_summary

    started = time.time()
    weights = resolve_weights(args.weights)
    if args.input_size and (args.input_size % 32 or args.input_size < 64):
        raise CliError(f"--input-size: must be a multiple of 32 and at least 64, or auto, not {args.input_size}")
    if args.crop_side < 0:
        raise CliError(f"--crop-side: must be >= 0 (0 = automatic), not {args.crop_side}")
    if args.epochs < 1 or args.batch_size < 1:
        raise CliError("--epochs and --batch-size must be at least 1")
    if args.step < 1:
        raise CliError(f"--step: must be at least 1, not {args.step}")
    try:
        labels = load_labels(args.data)
        split_seed = args.seed if args.split_seed is None else args.split_seed
        try:
            train_idx, test_idx = split_samples(labels.animals, args.test_fraction, split_seed, args.split)
        except ValueError as exc:
            raise CliError(f"--split/--test-fraction: {exc}") from exc
        if args.step > 1:
            sources = sorted({labels.animals[i].source for i in train_idx}, key=natural_key)
            kept = set(sources[::args.step])
            train_idx = [i for i in train_idx if labels.animals[i].source in kept]
        if not train_idx:
            raise CliError(f"{args.data}: no training images left after the split")
        center = args.crop_center
        if center == "auto":
            center = "mask" if labels.has_masks else "box"
        side = args.crop_side or (0.0 if center == "frame" else auto_side(labels.animals[i] for i in train_idx))
        spec = CropSpec(center, side)
        if args.input_size:
            input_why = "--input-size"
        elif center == "frame":
            args.input_size, input_why = INPUT_MIN, "whole images: the default"
        else:
            args.input_size, input_why = auto_input_size([labels.animals[i] for i in train_idx], side, OUTPUT_STRIDE)
        augment, pairs = make_augment(args, labels.keypoint_names)
        samples = cut_samples(labels, spec, train_idx, patch_margin(augment))
    except DataError as exc:
        raise CliError(str(exc)) from exc
    if len(samples) < args.batch_size:
        raise CliError(f"{args.data}: {len(samples)} training animals, fewer than --batch-size {args.batch_size}")
    seed_everything(args.seed)
    scale = "whole image, per-image scale" if spec.center == "frame" else f"{side:g} px -> {args.input_size} px"
    print(f"posenet: input {args.input_size} px ({input_why})"
          + (f", small backbone stride {small_stride(args)}" if args.backbone == "small" else ""), flush=True)
    print(f"posenet: {len(train_idx)} training / {len(test_idx)} test animals from {args.data} ({labels.format}, "
          f"keypoints {', '.join(labels.keypoint_names)}); crops centred on {spec.center}, {scale}; "
          f"mirror pairs {pairs if augment and augment.flip_pairs else 'off'}", flush=True)
    model, history = train_model(len(labels.keypoint_names), samples, args, weights, augment)
    split = {"mode": args.split, "test_fraction": args.test_fraction, "seed": split_seed}
    meta = {
        "module": "posenet", "architecture": f"simple-baselines/{args.backbone}",
        **({"backbone_stride": small_stride(args)} if args.backbone == "small" else {}),
        "input": {"height": args.input_size, "width": args.input_size, "channels": 3},
        "keypoint_names": labels.keypoint_names, "output_stride": OUTPUT_STRIDE, "sigma": args.sigma,
        "loss": {"name": {"mse": "masked heatmap MSE", "bce": "masked heatmap binary cross-entropy (sigmoid "
                          "heatmaps)"}[args.loss], "kind": args.loss, "fg_weight": args.fg_weight},
        "crop": {**spec.to_json(), "input_px": args.input_size, "input_reason": input_why},
        "left_right_pairs": [list(p) for p in pairs],
        "peaks": "argmax + log-parabola sub-pixel refinement in the service (services/posenet/peaks.py)",
        "training": training_summary(args, history, {"path": str(Path(args.data)), "format": labels.format,
                                                     "train": len(train_idx), "test": len(test_idx),
                                                     "step": args.step,
                                                     "split": split}, started),
    }
    version = export_posenet(model, args.out, args.model_name, meta, args.version)
    print(f"posenet: exported {version.path}", flush=True)
    return 0
