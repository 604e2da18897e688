"""`sipec train segnet`, `sipec evaluate segnet`, `sipec serve segnet` (TensorFlow is imported lazily)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

DEFAULT_IMAGE_SIZE = "320x256"
VIDEO_FRAMES = 300           # frames of a --video that masks are derived from, spread over it
ANIMAL_INPUT_PX = 32         # an animal's longer side at the network's input when the input size is chosen
MAX_INPUT_SIDE = 1024


# --- shared flags and data ------------------------------------------------------------------------------
def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one or more sources)")
    g.add_argument("--coco", type=Path, help="COCO instances JSON with masks (with --images)")
    g.add_argument("--via", type=Path, help="VIA (VGG Image Annotator) project JSON (with --images), read as COCO")
    g.add_argument("--via-class-attribute", help="VIA region attribute holding the class (default: one class)")
    g.add_argument("--images", type=Path,
                   help="folder of the images named by the annotations' file_name (a video file_name with a "
                        "frame_index reads that frame of the video)")
    g.add_argument("--synth", type=Path, action="append", default=[],
                   help="a `sipec synth` output folder (annotations.json + video.mp4); repeat for several")
    g.add_argument("--flies", type=Path,
                   help="the sleap-flies-clip folder; its masks are DERIVED by thresholding, not ground truth")
    g.add_argument("--video", type=Path, action="append", default=[],
                   help="a video with no labels: instance masks are DERIVED from it (see --derive), and only "
                        "frames with exactly --animals blobs are used; repeat for several")
    g.add_argument("--frames", help="START:STOP: only these images of each source, in file order "
                                    "(e.g. 0:1050, or 1050: for the rest)")
    g.add_argument("--step", type=int, default=1,
                   help="then every N-th of them (neighbouring video frames are nearly alike; default 1)")
    g.add_argument("--limit", type=int, default=None,
                   help=f"at most this many images per source (of a --video: spread over it, default "
                        f"{VIDEO_FRAMES})")
    g.add_argument("--image-size", default=None,
                   help=f"network input WIDTHxHEIGHT (or one number, square), multiples of 32; frames are "
                        f"letterboxed into it (train default {DEFAULT_IMAGE_SIZE}; evaluate: the model's)")
    g.add_argument("--max-instances", type=int, default=16, help="most instances per training image (default 16)")
    g = p.add_argument_group("masks derived from --video (no labels)")
    g.add_argument("--derive", choices=("background", "threshold"), default="background",
                   help="background: differences from the video's median frame (animals must move); threshold: "
                        "the grey levels of --intensity (default background)")
    g.add_argument("--animals", type=int, default=1,
                   help="animals in every frame; frames with another number of blobs (animals touching, or one "
                        "lost) are left out and counted (default 1)")
    g.add_argument("--intensity", help="threshold: grey levels LO:HI that are animal, e.g. 0:155 for dark animals")
    g.add_argument("--difference", type=float,
                   help="background: least difference from the background in grey levels (default: Otsu's "
                        "threshold of the differences, at least six noise deviations)")
    g.add_argument("--grow", type=float,
                   help="background: grow blobs into pixels differing by at least this (below --difference): "
                        "fuller masks of low-contrast animals, but also reflections and shadows (default off)")
    g.add_argument("--area", help="blob area MIN:MAX in pixels (default: a quarter to four times the median "
                                  "area of the largest blobs)")
    g.add_argument("--save-derived", type=Path,
                   help="also write the derived masks as COCO instances (video file_name + frame_index), to "
                        "check or correct them and to train from with --coco FILE --images VIDEO_DIR")


def _image_size(text: str | None) -> tuple[int, int]:
    from services.segnet.config import SIZE_MULTIPLE, parse_image_size
    from sipec.cli import CliError

    try:
        h, w = parse_image_size(text or DEFAULT_IMAGE_SIZE)
    except ValueError as exc:
        raise CliError(f"--image-size: {exc}") from exc
    if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE or min(h, w) < 64:
        raise CliError(f"--image-size: width and height must be multiples of {SIZE_MULTIPLE} and at least 64, "
                       f"got {w}x{h}")
    return h, w


def load_data(args: argparse.Namespace, input_size: tuple[int, int] | None,
              derivations: list | None = None) -> Any:
    """SegData of every source named on the command line; CliError naming the file or flag on bad input.

    ``input_size`` None (training without --image-size): chosen from the animals' length in the --video
    sources (:func:`input_size_for`), else the default. Derivations of --video sources go to `derivations`.
    """
    from services.segnet.data import SegData, load_coco, load_derived, load_flies, load_synth, parse_frames
    from sipec.cli import CliError

    parts = []
    try:
        frames = parse_frames(args.frames)
    except ValueError as exc:
        raise CliError(f"--frames: {exc}") from exc
    if args.save_derived and not args.video:
        raise CliError("--save-derived: only with --video (it writes the masks derived from the videos)")
    try:
        if (args.coco or args.via) and (not args.images or not args.images.is_dir()):
            raise CliError(f"--images: directory not found: {args.images} (needed with --coco / --via)")
        if args.coco and not args.coco.is_file():
            raise CliError(f"--coco: file not found: {args.coco}")
        if args.via and not args.via.is_file():
            raise CliError(f"--via: file not found: {args.via}")
        prepared = _prepare_videos(args, frames)
        if input_size is None:
            input_size = input_size_for([record for record, _ in prepared])
        if args.coco:
            parts.append(load_coco(args.coco, args.images, input_size, args.max_instances, args.limit, frames,
                                   args.step))
        if args.via:
            import tempfile

            from services.segnet.via import via_to_coco
            from sipec.data.coco import write_coco_instances

            coco = via_to_coco(args.via, args.images, args.via_class_attribute)
            with tempfile.TemporaryDirectory() as tmp:
                write_coco_instances(Path(tmp) / "via.json", coco)
                parts.append(load_coco(Path(tmp) / "via.json", args.images, input_size, args.max_instances,
                                       args.limit, frames, args.step))
        for folder in args.synth:
            parts.append(load_synth(folder, input_size, args.max_instances, args.limit, frames, args.step))
        if args.flies:
            parts.append(load_flies(args.flies, input_size, args.step, frames, args.limit))
        derived = []
        for record, kept in prepared:
            part = load_derived(kept, record.video, input_size, args.max_instances)
            print(f"segnet: {record.describe()}", flush=True)
            if not record.kept:
                raise CliError(f"--video {record.video}: no frame has exactly {args.animals} blob(s); check --animals, "
                               "or set --area and --difference (or --derive threshold --intensity) by hand")
            if derivations is not None:
                derivations.append(record)
            derived.append((record, part))
            parts.append(part)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    if not parts:
        raise CliError("no data: give --coco or --via with --images, --synth DIR, --video FILE or --flies DIR")
    names = {tuple(p.class_names) for p in parts}
    if len(names) > 1:
        raise CliError(f"the data sources have different classes: {sorted(names)}")
    data = SegData.concat(parts)
    if len(data) == 0:
        raise CliError("the data sources hold no images (check --frames and --limit)")
    if args.save_derived:
        _save_derived(args.save_derived, derived)
    return data


def _prepare_videos(args: argparse.Namespace, frames: slice | None) -> list:
    """(Derivation, iterator of kept frames) per --video: settings estimated, nothing decoded beyond that yet."""
    from services.segnet.data import video_indices
    from sipec.cli import CliError
    from sipec.data.derived_masks import DeriveSettings, derive, frame_count, parse_range

    if not args.video:
        return []
    try:
        settings = DeriveSettings(
            method=args.derive, animals=args.animals,
            intensity=parse_range(args.intensity, "intensity", "0:155") if args.intensity else None,
            difference=args.difference, grow=args.grow,
            area=parse_range(args.area, "area", "150:60000") if args.area else None)
        settings.validate()
    except ValueError as exc:
        field, _, problem = str(exc).partition(": ")
        raise CliError(f"--{'derive' if field == 'method' else field}: {problem}") from exc
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be at least 1, not {args.limit}")
    prepared = []
    for video in args.video:
        if not video.is_file():
            raise CliError(f"--video: file not found: {video}")
        count = frame_count(video)
        indices = video_indices(count, frames, args.step, args.limit or VIDEO_FRAMES)
        if not indices:
            raise CliError(f"--video {video}: --frames/--step select none of its {count} frames")
        prepared.append(derive(video, indices, settings, count))
    return prepared


def input_size_for(derivations: list) -> tuple[int, int]:
    """The default input, or, when the --video animals would be shorter than ANIMAL_INPUT_PX there, the smallest
    input (multiples of 32, longer side at most MAX_INPUT_SIDE, never smaller than the default) where they are not.
    Prints the choice and the reason."""
    import math

    from services.segnet.config import SIZE_MULTIPLE, parse_image_size
    from services.segnet.data import letterbox_scale

    default = parse_image_size(DEFAULT_IMAGE_SIZE)
    measured = [d for d in derivations if d.animal_length_px > 0]
    if not measured:
        return default
    length = float(sorted(d.animal_length_px for d in measured)[len(measured) // 2])
    h = max(d.frame_size[0] for d in measured)
    w = max(d.frame_size[1] for d in measured)
    scale = letterbox_scale(h, w, *default)
    if length * scale >= ANIMAL_INPUT_PX:
        print(f"segnet: input {default[1]}x{default[0]} (default): the animals are about {length:.0f} px long in "
              f"the frames, {length * scale:.0f} px at the input", flush=True)
        return default
    want = min(1.0, ANIMAL_INPUT_PX / length, MAX_INPUT_SIDE / max(h, w))
    size = (max(default[0], SIZE_MULTIPLE * math.ceil(h * want / SIZE_MULTIPLE)),
            max(default[1], SIZE_MULTIPLE * math.ceil(w * want / SIZE_MULTIPLE)))
    at_input = length * letterbox_scale(h, w, *size)
    print(f"segnet: input {size[1]}x{size[0]} (chosen; --image-size sets it): the animals are about {length:.0f} px "
          f"long in {w}x{h} frames, {length * scale:.0f} px at the default {default[1]}x{default[0]}, "
          f"{at_input:.0f} px here", flush=True)
    return size


def _save_derived(path: Path, derived: list) -> None:
    """The derived masks of each --video ((Derivation, its SegData) pairs) as COCO instances: the video's name as
    file_name, and frame_index."""
    from sipec.data.coco import CocoInstances, image_entry, instance_annotation, make_category, write_coco_instances
    from sipec.geometry import decode_rle

    coco = CocoInstances(categories=[make_category(1, "animal")],
                         info={"description": "instance masks DERIVED from videos by sipec train segnet --video; "
                                              "not ground truth"})
    for record, part in derived:
        for index, (h, w), gt in zip(record.kept, part.frame_sizes, part.gt, strict=True):
            image_id = len(coco.images) + 1
            coco.images.append(image_entry(image_id, int(w), int(h), record.video.name, frame_index=int(index)))
            for cls, rle in gt:
                coco.annotations.append(instance_annotation(decode_rle(rle), ann_id=len(coco.annotations) + 1,
                                                            image_id=image_id, category_id=cls, rle=rle))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_coco_instances(path, coco)
    print(f"segnet: derived masks of {len(coco.images)} frames written to {path}", flush=True)


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    from services.segnet.config import BACKBONES

    g = p.add_argument_group("network and training")
    g.add_argument("--backbone", choices=BACKBONES, default="mobilenetv2-0.35",
                   help="resnet101 / resnet50: the paper's (GPU); mobilenetv2[-0.5|-0.35]: for CPUs "
                        "(default mobilenetv2-0.35)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate at the top of the cosine (default 1e-3)")
    g.add_argument("--stages", default=None,
                   help="transfer-learning stages LAYERS:EPOCHS,... with LAYERS heads|5+|4+|3+|all (default: "
                        "heads, 4+, all a third each with pretrained weights; all with --weights none)")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="stop training at the first step after this many minutes")
    g.add_argument("--no-augment", action="store_true", help="no flips/rotation/scale/brightness/contrast")


def _config(args: argparse.Namespace, input_size: tuple[int, int], class_names: list[str]) -> Any:
    from services.segnet.config import preset

    return preset(args.backbone, input_size[0], input_size[1], tuple(class_names))


def _train_one(args: argparse.Namespace, data: Any, input_size: tuple[int, int], weights: str | None,
               log: Any = print, epochs: int | None = None) -> Any:
    from services.segnet.augment import AugmentConfig
    from services.segnet.train import train_model
    from sipec.cli import CliError

    try:
        return train_model(data, _config(args, input_size, data.class_names), epochs or args.epochs, args.batch_size,
                           args.seed, weights=weights, lr=args.lr,
                           augment=None if args.no_augment else AugmentConfig(), stages=args.stages, log=log,
                           max_seconds=args.max_minutes * 60 if args.max_minutes else None)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def _check_common_flags(args: argparse.Namespace) -> None:
    from sipec.cli import CliError

    if args.epochs < 1:
        raise CliError(f"--epochs must be at least 1, not {args.epochs}")
    if args.batch_size < 1:
        raise CliError(f"--batch-size must be at least 1, not {args.batch_size}")
    if args.step < 1:
        raise CliError(f"--step must be at least 1, not {args.step}")


# --- train ---------------------------------------------------------------------------------------------
def register_train(sub: Any) -> None:
    from sipec.training import add_training_arguments

    p = sub.add_parser("segnet", help="train SegNet (Mask R-CNN) and export it to a model repository",
                       description="Train SegNet's Mask R-CNN on instance masks (COCO, VIA, sipec synth, or the "
                                   "flies clip with derived masks) and export it as a SavedModel.")
    _add_data_arguments(p)
    _add_model_arguments(p)
    add_training_arguments(p, "segnet", epochs=30, batch_size=4)
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from services.segnet.train import export_model
    from sipec.training import resolve_weights, training_summary

    started = time.time()
    _check_common_flags(args)
    input_size = _image_size(args.image_size) if args.image_size else None
    weights = resolve_weights(args.weights)
    derivations: list = []
    data = load_data(args, input_size, derivations)
    input_size = data.input_size
    print(f"segnet: training on {len(data)} images ({int((data.classes > 0).sum())} instances), "
          f"input {input_size[1]}x{input_size[0]}, backbone {args.backbone}", flush=True)
    result = _train_one(args, data, input_size, weights)
    summary = training_summary(args, result.history, {
        "images": len(data), "instances": int((data.classes > 0).sum()),
        "sources": sorted({s.split("#")[0] for s in data.sources}), "steps": result.steps,
        "stages": [list(s) for s in result.stages],
        **({"derived_masks": [d.summary() for d in derivations]} if derivations else {})}, started)
    version = export_model(result.model, Path(args.out), args.model_name, summary, args.version)
    print(f"segnet: exported {version.path} ({result.steps} steps in {result.seconds:.0f}s)")
    return 0


# --- evaluate ------------------------------------------------------------------------------------------
def register_evaluate(sub: Any) -> None:
    from sipec import protocols

    p = sub.add_parser("segnet", help="SegNet mAP@0.5, mean IoU and Dice; cross-validation; label-count ablation",
                       description="Evaluate an exported SegNet model (--model-repo), or train and evaluate with "
                                   "k-fold cross-validation (--folds) or a label-count ablation (--train-sizes), "
                                   "as in the SIPEC paper's Fig. 2b. Prints a table and writes JSON (--json).")
    _add_data_arguments(p)
    _add_model_arguments(p)
    g = p.add_argument_group("evaluation")
    g.add_argument("--model-repo", type=Path, help="evaluate this repository's model (newest version)")
    g.add_argument("--model-name", default="segnet", help="model name in the repository (default segnet)")
    g.add_argument("--min-score", type=float, default=0.05, help="detections below are dropped (default 0.05)")
    protocols.add_arguments(g, "images", "--test-fraction")
    g.add_argument("--test-fraction", type=float, default=0.3,
                   help="--train-sizes tests on this last fraction of the images (default 0.3)")
    g.add_argument("--epochs", type=int, default=30, help="epochs of each model --folds/--train-sizes trains")
    g.add_argument("--batch-size", type=int, default=4)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--weights", default="none", help="initialisation of the models trained here (as in train)")
    g.add_argument("--json", type=Path, help="write the results here")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from sipec.cli import CliError

    if not (args.folds or args.train_sizes or args.model_repo):
        raise CliError("nothing to evaluate: give --model-repo, --folds K or --train-sizes N,M,...")
    _check_common_flags(args)
    results: dict[str, Any] = {}
    if args.model_repo:
        results["model"] = _evaluate_model(args)
    if args.folds or args.train_sizes:
        results.update(_evaluate_protocols(args))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
        print(f"segnet: wrote {args.json}")
    return 0


def _evaluate_model(args: argparse.Namespace) -> dict[str, Any]:
    from services.segnet.evaluate import backend_predict_fn, evaluate, table
    from sipec.cli import CliError
    from sipec.serving.backends import LocalBackend
    from sipec.serving.errors import ServingError

    if not args.model_repo.is_dir():
        raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    try:
        backend = LocalBackend(args.model_repo, args.model_name, poll_s=0)
    except ServingError as exc:
        raise CliError(f"--model-repo: {exc}") from exc
    try:
        if not backend.ready():
            raise CliError(f"--model-repo: no loadable model {args.model_name!r} in {args.model_repo}")
        meta = backend.metadata()
        size = (int(meta.info["input"]["height"]), int(meta.info["input"]["width"]))
        if args.image_size and _image_size(args.image_size) != size:
            raise CliError(f"--image-size {args.image_size} differs from the model's input "
                           f"{size[1]}x{size[0]}; leave it out to use the model's")
        data = load_data(args, size)
        model_names = list(meta.info.get("class_names", []))
        if model_names != data.class_names:
            raise CliError(f"the data's classes {data.class_names} differ from the model's {model_names}")
        row = {"model": f"{args.model_name} v{meta.version}",
               **evaluate(backend_predict_fn(backend), data, min_score=args.min_score)}
    finally:
        backend.close()
    print(table([row], "model"))
    return row


def _evaluate_protocols(args: argparse.Namespace) -> dict[str, Any]:
    from services.segnet.evaluate import RESULT_KEYS, evaluate, model_predict_fn, table
    from sipec import protocols
    from sipec.cli import CliError
    from sipec.training import resolve_weights

    weights = resolve_weights(args.weights)
    data = load_data(args, _image_size(args.image_size) if args.image_size else None)
    input_size = data.input_size
    out: dict[str, Any] = {}
    sizes: list[int] = args.train_sizes
    try:
        splits = protocols.block_folds(["frames"] * len(data), args.folds) if args.folds else []
        test, trains = (protocols.ablation_split(len(data), sizes, args.test_fraction, args.seed) if sizes
                        else ([], []))
    except ValueError as exc:
        raise CliError(f"--folds/--train-sizes/--test-fraction: {exc}") from exc
    runs = [(f"fold {k + 1}/{args.folds}", tr, te, args.epochs) for k, (tr, te) in enumerate(splits)]
    # every ablation size trains as many steps as the whole pool would: the curve measures labels, not training
    pool = len(data) - len(test)
    runs += [(f"{len(tr)} training images", tr, test, protocols.equal_steps_epochs(args.epochs, pool, len(tr)))
             for tr in trains]
    rows = []
    for label, train_idx, test_idx, epochs in protocols.progress(runs, "segnet protocol"):
        print(f"segnet: {label}: training on {len(train_idx)} images for {epochs} epochs, testing on "
              f"{len(test_idx)}", flush=True)
        res = _train_one(args, data.subset(train_idx), input_size, weights, log=None, epochs=epochs)
        row = evaluate(model_predict_fn(res.model), data.subset(test_idx), min_score=args.min_score)
        print(f"segnet: {label}: mAP@0.5 {row['map50']:.3f} ({res.steps} steps, {res.seconds:.0f}s)", flush=True)
        rows.append({"train_images": len(train_idx), "epochs": epochs, **row, "steps": res.steps,
                     "train_seconds": round(res.seconds, 1)})
    if args.folds:
        fold_rows = [{"fold": k + 1, **r} for k, r in enumerate(rows[:args.folds])]
        print(table(fold_rows, "fold"))
        out["folds"] = fold_rows
        out["folds_summary"] = s = protocols.summarize(fold_rows, RESULT_KEYS)
        print(f"segnet: {args.folds}-fold mAP@0.5 {s['map50']['mean']:.3f} +- {s['map50']['sem']:.3f} (mean +- "
              f"s.e.m.), mean IoU {s['mean_iou']['mean']:.3f}, Dice {s['mean_dice']['mean']:.3f}")
    if sizes:
        size_rows = [{"train_size": r["train_images"], **r} for r in rows[args.folds:]]
        print(table(size_rows, "train_images"))
        out["train_sizes"] = size_rows
        out["peak"] = protocols.peak_point(sizes, [r["map50"] for r in size_rows], 0.95)
        stem = args.plot or (args.json.with_suffix("") if args.json else Path("segnet-ablation"))
        out["plot"] = [str(p) for p in protocols.plot_ablation(size_rows, "map50", Path(stem),
                                                               "SegNet: mask mAP@0.5")]
        print(f"segnet: mAP@0.5 within 95% of the best ({out['peak']['peak']:.3f}) from {out['peak']['size']} "
              f"training images; plot {out['plot'][0]}")
    return out


# --- serve ---------------------------------------------------------------------------------------------
def register_serve(sub: Any) -> None:
    from sipec.serving.cli import add_server_arguments
    from sipec.serving.module import add_backend_arguments

    p = sub.add_parser("segnet", help="serve SegNet over gRPC (sipec.v1.SegNet)",
                       description="Segment and SegmentStream over gRPC, with the model in-process (--backend "
                                   "local) or behind TF Serving / `sipec serve model-server` (--backend tfserving).")
    add_server_arguments(p, 50051)
    add_backend_arguments(p, "segnet")
    p.add_argument("--max-batch", type=int, default=8, help="most stream frames per backend call (default 8)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096, help="largest frame accepted (default 4096^2)")
    p.add_argument("--mask-overlap", type=float, default=0.5,
                   help="drop a detection whose mask lies more than this fraction inside a better one's "
                        "(default 0.5; 1 keeps all)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from services.segnet.service import serve

    return serve(args)
