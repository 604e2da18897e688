"""`sipec train behavenet`, `sipec evaluate behavenet`, `sipec serve behavenet`.

Heavy imports (TensorFlow) happen inside the command functions, so `sipec --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from services.behavenet import (
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_CROP_PIXELS,
    DEFAULT_MAX_SUBJECTS,
    DEFAULT_MODEL,
    DEFAULT_PORT,
)

log = logging.getLogger("sipec.behavenet")

DATA_HELP = ("labelled video folders: a `sipec synth` output, or a folder with the video (video.mp4), "
             "behaviour.csv or a VIA 3 project (via.json / *.via.json) and optionally annotations.json "
             "(COCO masks with an identity per instance; without it one animal, the whole frame is its crop)")


def _add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Network, crop and training settings shared by `train` and `evaluate --leave-one-video-out`."""
    from services.behavenet.xception import BACKBONES

    g = p.add_argument_group("network and crops")
    g.add_argument("--backbone", choices=sorted(BACKBONES), default="xception-small",
                   help="feature network: xception (keras.applications.Xception, 2048 features), xception-mouse "
                        "(without the first 17 layers, for small crops), xception-small / xception-small-mouse "
                        "(width 0.25, 2 middle-flow blocks; CPU). Default xception-small")
    g.add_argument("--input-size", type=int, default=64, help="network input side in pixels (default 64)")
    g.add_argument("--crop-px", type=int, default=128,
                   help="individual crop side in source pixels around the mask COM (default 128)")
    g.add_argument("--pair-crop-px", type=int, default=192,
                   help="pair crop side in source pixels around the joint COM (default 192)")
    g.add_argument("--pair-dilation-px", type=int, default=8,
                   help="masks dilated by this many pixels that overlap make an interacting pair (default 8)")
    g.add_argument("--no-pairs", action="store_true", help="no pair crops (individual crops only)")
    g.add_argument("--window-n", type=int, default=10, help="temporal window [t-n, t+n] (default n=10)")
    g.add_argument("--temporal-epochs", type=int, default=16, help="epochs of the temporal network (default 16)")
    g.add_argument("--temporal-batch-size", type=int, default=16,
                   help="batch size of the temporal network (default 16)")
    g.add_argument("--frame-step", type=int, default=3,
                   help="the frame classifier trains on every k-th crop of each sequence (default 3: "
                        "neighbouring frames are nearly identical); the temporal network on all")
    g.add_argument("--no-augment", action="store_true", help="no flips, quarter turns or brightness changes")
    g.add_argument("--gamma", type=float, default=3.0, help="focal loss gamma (default 3)")
    g.add_argument("--alpha", type=float, default=0.5, help="focal loss alpha (default 0.5)")
    g.add_argument("--max-frames", type=int, default=None, help="use at most this many frames of each video")
    g.add_argument("--behaviours", default=None, metavar="A,B,...",
                   help="class list (default: the dataset's own, or 'none' + the labels seen, sorted)")
    g.add_argument("--via-attribute", default=None,
                   help="VIA attribute holding the behaviour, when the segments use several")


def register_train(sub: argparse._SubParsersAction) -> None:
    from sipec.training import add_training_arguments

    p = sub.add_parser("behavenet", help="BehaveNet: Xception per frame + temporal conv net, focal loss",
                       description="Train BehaveNet in SIPEC's two stages (frame classifier, then the temporal "
                                   "network on frozen features) on labelled videos, and export three models: "
                                   "NAME-features, NAME (temporal) and NAME-frame (frame-only).")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help=DATA_HELP)
    add_training_arguments(p, default_model=DEFAULT_MODEL, epochs=16, batch_size=36)
    _add_model_arguments(p)
    p.set_defaults(func=run_train)


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("behavenet", help="BehaveNet: per-class F1, macro-F1, Pearson r, confusion, chance",
                       description="Score BehaveNet's frame-only and temporal networks on labelled videos: "
                                   "per-class precision/recall/F1, macro-F1, Pearson correlation over time, "
                                   "confusion matrix, shuffled-label chance. With --leave-one-video-out, train on "
                                   "all videos but one and test on that one, for each video in turn.")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help=DATA_HELP)
    p.add_argument("--model-repo", help="model repository holding the models (not with --leave-one-video-out)")
    p.add_argument("--model-name", default=DEFAULT_MODEL,
                   help=f"temporal model name; NAME-features and NAME-frame go with it (default {DEFAULT_MODEL})")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--ethogram-dir", metavar="DIR",
                   help="write an ethogram PNG and bout statistics CSV per video (temporal predictions)")
    p.add_argument("--leave-one-video-out", action="store_true",
                   help="train one model per held-out video with the flags below, instead of --model-repo")
    p.add_argument("--folds", type=int, default=0,
                   help="K-fold cross-validation over whole videos (2 <= K <= the --data folders), mean +- s.e.m.")
    p.add_argument("--epochs", type=int, default=16, help="frame-classifier epochs per fold (default 16)")
    p.add_argument("--batch-size", type=int, default=36, help="frame-classifier batch size (default 36)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _add_model_arguments(p)
    p.set_defaults(func=run_evaluate)


def register_serve(sub: argparse._SubParsersAction) -> None:
    from sipec.serving.cli import add_server_arguments
    from sipec.serving.module import add_backend_arguments

    p = sub.add_parser("behavenet", help="BehaveNet service: Classify (one window), ClassifyStream (per track)",
                       description="Serve BehaveNet over gRPC (sipec.v1.BehaveNet). Needs two models: the "
                                   "temporal network (--model-name) and its feature network (--features-model).")
    add_server_arguments(p, default_port=DEFAULT_PORT)
    add_backend_arguments(p, default_model=DEFAULT_MODEL)
    p.add_argument("--features-model", default=None,
                   help="feature network's model name (default: MODEL_NAME-features)")
    p.add_argument("--features-model-version", type=int, default=0,
                   help="serve exactly this version of the feature network (default 0: the newest)")
    p.add_argument("--max-subjects", type=int, default=DEFAULT_MAX_SUBJECTS,
                   help=f"open subjects per stream; more get RESOURCE_EXHAUSTED (default {DEFAULT_MAX_SUBJECTS})")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch sent to a model (default {DEFAULT_MAX_BATCH})")
    p.add_argument("--max-crop-pixels", type=int, default=DEFAULT_MAX_CROP_PIXELS,
                   help="largest crop accepted, height*width; larger get RESOURCE_EXHAUSTED "
                        f"(default {DEFAULT_MAX_CROP_PIXELS})")
    p.set_defaults(func=run_serve)


# ---------------------------------------------------------------------------------------------


def _settings_from_args(args: argparse.Namespace, weights: str | None) -> Any:
    from services.behavenet.crops import CropSettings
    from services.behavenet.model import TemporalConfig
    from services.behavenet.train import TrainSettings
    from sipec.cli import CliError

    settings = TrainSettings(
        backbone=args.backbone,
        crops=CropSettings(args.input_size, args.crop_px, args.pair_crop_px, args.pair_dilation_px),
        temporal=TemporalConfig(n=args.window_n), frame_epochs=args.epochs, temporal_epochs=args.temporal_epochs,
        frame_batch=args.batch_size, temporal_batch=args.temporal_batch_size, gamma=args.gamma, alpha=args.alpha,
        frame_step=args.frame_step, augment=not args.no_augment, weights=weights, seed=args.seed)
    try:
        settings.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.max_frames is not None and args.max_frames < 1:
        raise CliError(f"--max-frames must be at least 1, not {args.max_frames}")
    from services.behavenet.xception import BACKBONES

    minimum = BACKBONES[args.backbone].min_input()
    if args.input_size < minimum:
        raise CliError(f"--input-size {args.input_size} is below the {args.backbone} minimum of {minimum}")
    return settings


def _load_data(args: argparse.Namespace, crops: Any, behaviours: list[str] | None = None) -> tuple[Any, list[Any]]:
    from services.behavenet.data import load_crop_sets
    from sipec.cli import CliError

    for folder in args.data:
        if not Path(folder).is_dir():
            raise CliError(f"--data: directory not found: {folder}")
    if behaviours is None and args.behaviours:
        behaviours = [b.strip() for b in args.behaviours.split(",") if b.strip()]
    try:
        return load_crop_sets(args.data, crops, behaviours=behaviours, pairs=not args.no_pairs,
                              max_frames=args.max_frames, via_attribute=args.via_attribute)
    except (OSError, ValueError, KeyError) as exc:
        raise CliError(f"--data: {exc}") from None


def _progress(message: str) -> None:
    log.info("%s", message)


def run_train(args: argparse.Namespace) -> int:
    from services.behavenet.train import export_behavenet, train_behavenet
    from sipec.training import ensure_keras_home, resolve_weights, training_summary

    ensure_keras_home()
    started = time.time()
    _check_model_names("--model-name", args.model_name)
    settings = _settings_from_args(args, resolve_weights(args.weights))
    if settings.weights == "imagenet":
        from services.behavenet.xception import BACKBONES
        from sipec.cli import CliError

        cfg = BACKBONES[settings.backbone]
        if cfg.width != 1.0 or cfg.middle_blocks != 8:
            raise CliError(f"--weights imagenet needs --backbone xception or xception-mouse, not {settings.backbone}")
    data, videos = _load_data(args, settings.crops)
    log.info("behavenet: %d crops (%d individual, %d pair) from %d videos; classes %s", len(data),
             len(data.rows("individual")), len(data.rows("pair")), len(videos), ", ".join(data.behaviours))
    trained = train_behavenet(data, settings, progress=_progress)
    written = export_behavenet(trained, args.out, args.model_name, version=args.version,
                               training=training_summary(args, started=started))
    for role, mv in written.items():
        print(f"behavenet: exported {role} model {mv.name} version {mv.version} to {mv.path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from sipec.cli import CliError

    if args.folds and args.leave_one_video_out:
        raise CliError("give --folds K or --leave-one-video-out (K = the number of videos), not both")
    if args.folds or args.leave_one_video_out:
        if args.model_repo:
            raise CliError("--folds/--leave-one-video-out train their own models: leave out --model-repo")
        k = args.folds or len(args.data)
        if len(args.data) < 2 or not 2 <= k <= len(args.data):
            raise CliError(f"--folds/--leave-one-video-out: folds hold whole videos, so K must be between 2 and "
                           f"the {len(args.data)} --data folder(s), not {k}")
        report = _video_folds(args, k)   # k: folds, all videos when --leave-one-video-out
    else:
        if not args.model_repo:
            raise CliError("give --model-repo (or --leave-one-video-out to train per fold)")
        report = _evaluate_repository(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        print(f"behavenet: report written to {args.json}")
    return 0


def _evaluate_repository(args: argparse.Namespace) -> dict[str, Any]:
    from services.behavenet.crops import CropSettings
    from services.behavenet.evaluate import evaluate_predictions, format_report
    from services.behavenet.predict import predict_cropset, repository_predictors
    from sipec.cli import CliError
    from sipec.serving.errors import NotFound

    if not Path(args.model_repo).is_dir():
        raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    _check_model_names("--model-name", args.model_name)
    try:
        predictors = repository_predictors(args.model_repo, args.model_name)
    except NotFound as exc:
        raise CliError(f"--model-repo: {exc}") from None
    meta = predictors.metadata
    c = meta["crops"]
    crops = CropSettings(int(c["input_size"]), int(c["crop_px"]), int(c["pair_crop_px"]), int(c["dilation_px"]))
    data, videos = _load_data(args, crops, behaviours=list(meta["class_names"]))
    probs = predict_cropset(predictors, data)
    social = sorted(set().union(*(_social(v) for v in videos)))
    report = evaluate_predictions(data, probs, social=social, seed=0)
    report["model"] = {"repo": str(args.model_repo), "name": args.model_name, "version": meta.get("version"),
                       "architecture": meta.get("architecture")}
    print(format_report(report))
    if args.ethogram_dir:
        _write_ethograms(args.ethogram_dir, data, probs["temporal"], social)
    return report


def _social(video: Any) -> set[str]:
    from services.behavenet.data import social_behaviours

    return social_behaviours(video)


def _video_folds(args: argparse.Namespace, n_folds: int) -> dict[str, Any]:
    """K folds of whole videos (leave-one-video-out when K is the number of videos): train on the others, test on
    the fold's videos; macro-F1 per fold, mean +- s.e.m., and all held-out videos pooled."""
    import numpy as np

    from services.behavenet.data import CropSet
    from services.behavenet.evaluate import evaluate_predictions, format_report
    from services.behavenet.predict import keras_predictors, predict_cropset
    from services.behavenet.train import train_behavenet
    from sipec.protocols import block_folds, progress
    from sipec.protocols import summarize as summarize_runs

    settings = _settings_from_args(args, None)
    data, videos = _load_data(args, settings.crops)
    social = sorted(set().union(*(_social(v) for v in videos)))
    names = data.videos()
    folds = []
    pooled_probs: dict[str, list[np.ndarray]] = {"frame": [], "temporal": []}
    pooled_sets: list[CropSet] = []
    for _, held_idx in progress(block_folds(names, n_folds), "behavenet folds"):
        held = [names[i] for i in held_idx]
        train = data.select([s for s in data.sequences if s.video not in held])
        test = data.select([s for s in data.sequences if s.video in held])
        log.info("behavenet: fold %s: training on %d crops, testing on %d", held, len(train), len(test))
        trained = train_behavenet(train, settings, progress=_progress)
        probs = predict_cropset(keras_predictors(trained), test)
        fold = evaluate_predictions(test, probs, social=social, seed=0)
        print(f"\n### held-out video(s) {', '.join(held)}\n\n{format_report(fold)}")
        folds.append({"held_out": held[0] if len(held) == 1 else held, "report": fold,
                      "train_seconds": round(trained.seconds, 1)})
        pooled_sets.append(test)
        for k in pooled_probs:
            pooled_probs[k].append(probs[k])
        import keras

        keras.backend.clear_session()
    pooled = evaluate_predictions(CropSet.concat(pooled_sets), {k: np.concatenate(v) for k, v in
                                                                pooled_probs.items()}, social=social, seed=0)
    summary = {}
    for m in ("frame", "temporal"):
        vals = [f["report"]["models"][m]["individual"]["macro_f1"] for f in folds]
        st = summarize_runs([{"v": v} for v in vals], ["v"])["v"]
        summary[m] = {"macro_f1_per_fold": vals, "macro_f1_mean": st["mean"], "macro_f1_sd": st["sd"],
                      "macro_f1_sem": st["sem"]}
    print(f"\n### all held-out videos pooled\n\n{format_report(pooled)}")
    for m, s in summary.items():
        print(f"{m}: macro-F1 per fold {', '.join(f'{v:.3f}' for v in s['macro_f1_per_fold'])}; "
              f"mean {s['macro_f1_mean']:.3f} +- {s['macro_f1_sem']:.3f} (s.e.m.)")
    return {"leave_one_video_out": n_folds == len(names), "k": n_folds, "folds": folds, "pooled": pooled,
            "summary": summary, "settings": {k: v for k, v in vars(args).items() if k != "func"}}


def _write_ethograms(folder: str, data: Any, probs: Any, social: list[str]) -> None:
    """Ethogram PNG and bout statistics CSV per video, from each animal's crops and its pairs' crops."""
    import numpy as np

    from services.behavenet.data import INDIVIDUAL, NONE_CLASS, PAIR
    from services.behavenet.evaluate import combine_individual_and_pairs, pair_predictions
    from sipec.reports.ethogram import bout_statistics, plot_ethogram, write_bout_statistics_csv

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    social_idx = [data.behaviours.index(s) for s in social if s in data.behaviours]
    pair_classes = social_idx + ([data.behaviours.index(NONE_CLASS)] if NONE_CLASS in data.behaviours else [])
    ind_rows, pair_rows = data.rows(INDIVIDUAL), data.rows(PAIR)
    pred_ind = probs[ind_rows].argmax(axis=1)
    if social_idx and len(pair_rows):
        pred_ind = combine_individual_and_pairs(data, pred_ind, pair_predictions(probs[pair_rows], pair_classes),
                                                social_idx)
    pred = np.full(len(data), -1, dtype=np.int64)
    pred[ind_rows] = pred_ind
    for video in data.videos():
        seqs = [s for s in data.sequences if s.video == video and s.kind == INDIVIDUAL]
        length = max((int(s.frames[-1]) + 1 for s in seqs), default=0)
        per: dict[str, Any] = {}
        for s in seqs:
            arr = per.setdefault(s.subject, np.full(length, -1, dtype=np.int64))
            arr[s.frames] = pred[s.rows]
        per = {k: per[k] for k in sorted(per, key=lambda k: (len(k), k))}
        fps = data.fps.get(video, 30.0)
        stem = Path(video).name
        plot_ethogram(per, data.behaviours, fps, out / f"{stem}_ethogram.png", title=f"{stem}: predicted behaviour")
        write_bout_statistics_csv(out / f"{stem}_bouts.csv", bout_statistics(per, data.behaviours, fps))
        print(f"behavenet: wrote {out / f'{stem}_ethogram.png'} and {out / f'{stem}_bouts.csv'}")


def _check_model_names(flag: str, *names: str) -> None:
    """CliError naming the flag when a model name is not a valid repository name."""
    from sipec.cli import CliError
    from sipec.serving.errors import InvalidInput
    from sipec.serving.repository import check_model_name

    for name in names:
        try:
            check_model_name(name)
        except InvalidInput as exc:
            raise CliError(f"{flag}: {exc}") from None


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def run_serve(args: argparse.Namespace) -> int:
    from services.behavenet.service import SERVICE_NAME, BehaveNetBackends, BehaveNetService
    from sipec.cli import CliError
    from sipec.serving.module import backend_from_args, run_module_server
    from sipec.v1 import behavenet_pb2_grpc

    for flag, value in (("--max-subjects", args.max_subjects), ("--max-batch", args.max_batch),
                        ("--max-crop-pixels", args.max_crop_pixels)):
        if value < 1:
            raise CliError(f"{flag} must be at least 1, not {value}")
    features_args = argparse.Namespace(**vars(args))
    features_args.model_name = args.features_model or f"{args.model_name}-features"
    features_args.model_version = args.features_model_version
    _check_model_names("--model-name", args.model_name)
    _check_model_names("--features-model", features_args.model_name)

    def make_servicer(backend: Any, runtime: Any) -> BehaveNetService:
        features = backend_from_args(features_args)
        return BehaveNetService(BehaveNetBackends(backend, features), runtime, max_subjects=args.max_subjects,
                                max_batch=args.max_batch, max_crop_pixels=args.max_crop_pixels,
                                batch_size=args.batch_size)

    return run_module_server(args, "behavenet", SERVICE_NAME, make_servicer,
                             behavenet_pb2_grpc.add_BehaveNetServicer_to_server)
