"""`sipec train idnet`, `sipec evaluate idnet`, `sipec serve idnet`.

Heavy imports (TensorFlow) happen inside the command functions, so `sipec --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from services.idnet import DEFAULT_MODEL, DEFAULT_PORT, FRAME_SUFFIX

log = logging.getLogger("sipec.idnet")

DATA_HELP = ("labelled sources: `sipec synth` folders, identity CSVs (video, frame, track_id, identity, "
             "identity_name, x1, y1, x2, y2; videos relative to the CSV) or folders holding identities.csv, "
             "and SLEAP folders (clip.slp + clip.mp4; identities from the SLEAP tracks)")


def _add_data_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", required=required, metavar="PATH", help=DATA_HELP)
    g.add_argument("--max-frames", type=int, default=None, help="use at most this many frames of each source")
    g.add_argument("--no-masks", action="store_true",
                   help="ignore masks (synth ground truth, SLEAP DERIVED threshold masks): whole crops")


def _add_network_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network and crops")
    g.add_argument("--backbone", choices=("densenet121", "densenet-small"), default="densenet-small",
                   help="densenet121: keras.applications.DenseNet121 (GPU); densenet-small: DenseNet-BC with "
                        "blocks (2,3,4), growth 16 (CPU). Default densenet-small")
    g.add_argument("--t", type=int, default=3, help="temporal context: 2T+1 crops; 0 = frame network only (default 3)")
    g.add_argument("--input-size", type=int, default=64, help="network input side S in pixels (default 64)")
    g.add_argument("--crop-px", type=int, default=None,
                   help="crop side in source pixels around the animal (default 96; with --from-analysis 1.1 x the "
                        "animals' median box side, so the crop fits the animals of that video)")
    g.add_argument("--dilation-px", type=int, default=2, help="mask dilation of the centre crop, S-pixels (default 2)")
    g.add_argument("--dilation-step-px", type=int, default=2,
                   help="extra dilation per frame away from the centre, S-pixels (default 2)")
    g.add_argument("--align", action=argparse.BooleanOptionalAction, default=None,
                   help="turn each masked crop so the animal's long axis lies horizontal (idtracker.ai does so for "
                        "animals seen from above); stored in the model, so the service crops alike (default: off "
                        "with --data, on with --from-analysis)")
    g.add_argument("--gru-units", type=int, default=64, help="units of each GRU direction (default 64)")
    g.add_argument("--recurrent-epochs", type=int, default=10, help="epochs of the recurrent network (default 10)")
    g.add_argument("--recurrent-batch-size", type=int, default=6, help="recurrent batch size (default 6, paper)")
    g.add_argument("--lr", type=float, default=None,
                   help="frame network learning rate (default 2.5e-4, the paper's; 1e-3 with --from-analysis)")
    g.add_argument("--lr-decay", type=float, default=None, metavar="K",
                   help="the paper's schedule lr_{E+1} = lr_E / K^E (default 1.5, the paper's; 1 = constant, the "
                        "default with --from-analysis, where the network learns from scratch on few crops)")
    g.add_argument("--recurrent-lr", type=float, default=5e-5, help="recurrent learning rate (default 5e-5, paper)")
    g.add_argument("--train-fraction", type=float, default=1.0,
                   help="train on the first fraction of each video's frames; the rest is held out and scored "
                        "in the training summary (default 1.0: all)")


def register_train(sub: argparse._SubParsersAction) -> None:
    from sipec.training import add_training_arguments

    p = sub.add_parser("idnet", help="IdNet: DenseNet per crop, then 3 bidirectional GRUs over 2T+1 crops",
                       description="Train IdNet in SIPEC's two stages (frame network, then the recurrent network on "
                                   "frozen features) and export NAME-frame (T=0) and, for T>0, NAME (recurrent).")
    _add_data_arguments(p, required=False)
    g = p.add_argument_group("identities without hand labels (instead of --data)")
    g.add_argument("--from-analysis", metavar="OUT/VIDEO", type=Path,
                   help="a `sipec analyze` result (segnet + tracker, ideally with --animals N): its tracks are cut "
                        "into fragments where the animals are apart, labelled from the longest stretch with all N "
                        "apart, and grown by IdNet's own confident predictions (idtracker.ai's accumulation)")
    g.add_argument("--animals", type=int, help="how many animals the video shows (needed with --from-analysis)")
    g.add_argument("--apart-margin", type=float, default=0.1,
                   help="animals are apart when their boxes, widened by this fraction of their longer side, do "
                        "not meet (default 0.1)")
    g.add_argument("--min-fragment-frames", type=int, default=3, help="shortest fragment used (default 3)")
    g.add_argument("--max-crops-per-fragment", type=int, default=200,
                   help="most crops of one fragment, a block at its middle (default 200)")
    g.add_argument("--rounds", type=int, default=4, help="accumulation rounds, each retraining (default 4)")
    g.add_argument("--min-certainty", type=float, default=0.5,
                   help="a fragment is labelled when its mean probability of its identity is at least this and "
                        "its global fragment's assignment holds (default 0.5)")
    g.add_argument("--until-converged", action=argparse.BooleanOptionalAction, default=None,
                   help="train the frame network until its training loss stops falling (at most --max-epochs) "
                        "instead of --epochs; default: on with --from-analysis, off with --data")
    g.add_argument("--max-epochs", type=int, default=150, help="most frame epochs with --until-converged (150)")
    add_training_arguments(p, default_model=DEFAULT_MODEL, epochs=10, batch_size=16)
    _add_network_arguments(p)
    p.set_defaults(func=run_train)


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    from sipec import protocols

    p = sub.add_parser("idnet", help="IdNet: accuracy, per-identity accuracy, confusion, shuffled-label chance",
                       description="Score exported IdNet models (NAME-frame and NAME) on labelled data, or with "
                                   "--leave-one-video-out retrain on all sources but one and score the one left out.")
    _add_data_arguments(p)
    p.add_argument("--model-repo", help="model repository holding NAME and NAME-frame")
    p.add_argument("--model-name", default=DEFAULT_MODEL, help=f"recurrent model name (default {DEFAULT_MODEL})")
    p.add_argument("--test-fraction", type=float, default=1.0,
                   help="score only the last fraction of each video's frames (default 1.0: all)")
    p.add_argument("--leave-one-video-out", action="store_true",
                   help="retrain (with the network flags) leaving each source out in turn; needs 2+ sources")
    protocols.add_arguments(p, "labelled frames", "--holdout-fraction")
    p.add_argument("--holdout-fraction", type=float, default=0.3,
                   help="--train-sizes: the last fraction of the frames (in video order) kept for testing")
    p.add_argument("--epochs", type=int, default=10,
                   help="frame epochs for --leave-one-video-out, --folds and --train-sizes")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the scores as JSON")
    _add_network_arguments(p)
    p.set_defaults(func=run_evaluate)


def register_serve(sub: argparse._SubParsersAction) -> None:
    from sipec.serving.cli import add_server_arguments
    from sipec.serving.module import add_backend_arguments

    p = sub.add_parser("idnet", help="IdNet gRPC service (Identify, IdentifyStream, GetModelInfo)")
    add_server_arguments(p, default_port=DEFAULT_PORT)
    add_backend_arguments(p, default_model=DEFAULT_MODEL)
    p.add_argument("--max-batch", type=int, default=64, help="most sequences per backend call (default 64)")
    p.add_argument("--max-tracks", type=int, default=256, help="most open tracks per stream (default 256)")
    p.set_defaults(func=run_serve)


# ------------------------------------------------------------------------------------------------ helpers
def _settings(args: argparse.Namespace) -> Any:
    from services.idnet.masking import MaskSettings
    from sipec.cli import CliError

    align = args.align if args.align is not None else bool(getattr(args, "from_analysis", None))
    s = MaskSettings(args.input_size, 96 if args.crop_px is None else args.crop_px, args.dilation_px,
                     args.dilation_step_px, int(align))
    try:
        s.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return s


def _load(args: argparse.Namespace, settings: Any) -> Any:
    from services.idnet.data import concat, load_source
    from sipec.cli import CliError

    sets = []
    for path in args.data:
        if not Path(path).exists():
            raise CliError(f"--data: not found: {path}")
        try:
            sets.append(load_source(Path(path), settings, args.max_frames, masks=not args.no_masks))
        except (ValueError, FileNotFoundError, KeyError) as exc:
            raise CliError(f"--data {path}: {exc}") from exc
    try:
        return concat(sets)
    except ValueError as exc:
        raise CliError(f"--data: {exc}") from exc


def _params(args: argparse.Namespace) -> Any:
    from services.idnet.train import TrainParams

    scratch = bool(getattr(args, "from_analysis", None))
    lr = args.lr if args.lr is not None else (1e-3 if scratch else 2.5e-4)
    k = args.lr_decay if args.lr_decay is not None else (1.0 if scratch else 1.5)
    converge = getattr(args, "until_converged", None)
    converge = scratch if converge is None else converge
    return TrainParams(epochs=args.epochs, batch_size=args.batch_size, lr=lr, k=k,
                       until_converged=converge, max_epochs=getattr(args, "max_epochs", 150),
                       recurrent_epochs=args.recurrent_epochs, recurrent_batch_size=args.recurrent_batch_size,
                       recurrent_lr=args.recurrent_lr)


def _config(args: argparse.Namespace, n: int) -> Any:
    from services.idnet.model import NetworkConfig
    from sipec.cli import CliError

    cfg = NetworkConfig(args.backbone, args.input_size, args.t, n, args.gru_units)
    try:
        cfg.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return cfg


def _check_fraction(name: str, value: float) -> None:
    from sipec.cli import CliError

    if not 0.0 < value <= 1.0:
        raise CliError(f"{name} must be in (0, 1], not {value}")


# ------------------------------------------------------------------------------------------------ commands
def run_train(args: argparse.Namespace) -> int:
    from services.idnet.data import time_split
    from services.idnet.evaluate import format_scores, identity_scores
    from services.idnet.train import fit_idnet, predict_frame, predict_recurrent
    from sipec.cli import CliError
    from sipec.serving.repository import check_model_name
    from sipec.training import ensure_keras_home, resolve_weights, seed_everything

    ensure_keras_home()
    started = time.time()
    check_model_name(args.model_name)
    _check_fraction("--train-fraction", args.train_fraction)
    if bool(args.data) == bool(args.from_analysis):
        raise CliError("give labelled sources with --data, or a tracked video with --from-analysis (not both)")
    weights = resolve_weights(args.weights)
    settings = _settings(args)
    if args.from_analysis:
        return _train_from_analysis(args, settings, weights, started)
    data = _load(args, settings)
    cfg = _config(args, len(data.identity_names))
    _check_weights(weights, cfg)
    seed_everything(args.seed)
    held = None
    if args.train_fraction < 1.0:
        tr, te = time_split(data, args.train_fraction)
        data, held = data.subset(tr), data.subset(te)
    print(f"idnet: {len(data)} training crops of {len(data.identity_names)} identities "
          f"({', '.join(data.identity_names)}) from {len(data.videos)} source(s); T={cfg.t}", flush=True)
    trained = fit_idnet(data, cfg, settings, _params(args), weights=weights)
    summary_data: dict[str, Any] = {"source": data.source, "videos": data.videos, "train_crops": len(data)}
    if held is not None and len(held):
        summary_data["held_out_crops"] = len(held)
        scores = {"frame": identity_scores(held.identity, predict_frame(trained, held), data.identity_names)}
        if cfg.t:
            scores["recurrent"] = identity_scores(held.identity, predict_recurrent(trained, held), data.identity_names)
        summary_data["held_out"] = {k: {m: v[m] for m in ("accuracy", "per_identity_accuracy",
                                                          "chance_shuffled_labels", "n")} for k, v in scores.items()}
        for k, v in scores.items():
            print(format_scores(f"idnet held-out (last {1 - args.train_fraction:.0%}) {k}", v), flush=True)
    _record_effective(args, settings, _params(args))
    _export(args, trained, cfg, data.identity_names, settings, summary_data, started)
    return 0


def _check_weights(weights: Any, cfg: Any) -> None:
    from sipec.cli import CliError

    if weights == "imagenet" and cfg.backbone != "densenet121":
        raise CliError("--weights imagenet needs --backbone densenet121")


def _export(args: argparse.Namespace, trained: Any, cfg: Any, names: list[str], settings: Any,
            summary_data: dict[str, Any], started: float) -> None:
    from services.idnet.export import export_idnet
    from sipec.training import training_summary

    summary = training_summary(args, trained.history, summary_data, started)
    fm = export_idnet(trained.frame, args.out, args.model_name + FRAME_SUFFIX, trained.frame_config(), names,
                      settings, summary, version=args.version)
    print(f"idnet: exported frame model {fm.name} version {fm.version} to {fm.path}")
    if cfg.t:
        rm = export_idnet(trained.recurrent, args.out, args.model_name, cfg, names, settings, summary,
                          version=args.version)
        print(f"idnet: exported recurrent model {rm.name} version {rm.version} to {rm.path}")


def _train_from_analysis(args: argparse.Namespace, settings: Any, weights: Any, started: float) -> int:
    """Fragments -> accumulation with the frame network -> IdNet (T as asked) on every labelled fragment."""
    from dataclasses import asdict, replace

    from services.idnet.from_analysis import (
        FragmentSettings,
        crop_px_for,
        explain_no_global,
        fragments_of,
        identity_names,
        label_fragments,
        load_crops,
        read_analysis,
        with_labels,
    )
    from services.idnet.train import fit_idnet, predict_frame
    from sipec.cli import CliError
    from sipec.training import seed_everything

    if not args.animals or args.animals < 2:
        raise CliError("--from-analysis needs --animals N (2 or more): how many animals the video shows")
    if args.train_fraction < 1.0:
        raise CliError("--train-fraction applies to --data; --from-analysis labels every fragment it can")
    s = FragmentSettings(args.animals, args.apart_margin, args.min_fragment_frames, args.max_crops_per_fragment,
                         args.rounds, args.min_certainty)
    try:
        s.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    try:
        video, cols = read_analysis(args.from_analysis)
    except ValueError as exc:
        raise CliError(f"--from-analysis: {exc}") from exc
    if args.crop_px is None:
        settings = replace(settings, crop_px=crop_px_for(cols))
    frags = fragments_of(cols, s)
    if not frags.globals:
        raise CliError(explain_no_global(args.from_analysis, frags, args.animals))
    g0 = frags.globals[0]
    print(f"idnet: {len(frags.fragments)} fragments, {len(frags.globals)} global fragments (all {args.animals} "
          f"apart); the longest: frames {g0.first}-{g0.last}, each animal seen {g0.length(frags.fragments)}+ frames; "
          f"crops of {settings.crop_px} px{', aligned' if settings.align else ''}", flush=True)
    try:
        data = load_crops(video, cols, frags, settings, s.max_crops)
    except ValueError as exc:
        raise CliError(f"--from-analysis {args.from_analysis}: {exc}") from exc
    cfg = _config(args, args.animals)
    _check_weights(weights, cfg)
    frame_cfg = replace(cfg, t=0)
    params = _params(args)
    more = replace(params, epochs=max(1, params.epochs // 2))   # each later round goes on from the last network
    seed_everything(args.seed)
    last: dict[str, Any] = {}

    def fit(d: Any) -> Any:
        last["net"] = fit_idnet(d, frame_cfg, settings, more if last else params, weights=weights,
                                init=last.get("net"))
        return last["net"]

    acc = label_fragments(data, frags, cols["frame"], s, fit, predict_frame)
    for r in acc.rounds:
        print(f"idnet: accumulation round {r['round']}: {r['accepted_globals']} global fragment(s) accepted, "
              f"{r['labelled_fragments']} fragments ({r['labelled_frames']} animal-frames) labelled", flush=True)
    labelled = with_labels(data, acc.labels, args.animals)
    print(f"idnet: {len(labelled)} crops of {args.animals} identities from {len(acc.accepted)} of "
          f"{len(frags.globals)} global fragments; T={cfg.t}", flush=True)
    trained = fit_idnet(labelled, cfg, settings, more if last else params, weights=weights, init=last.get("net"))
    summary_data = {
        "source": f"sipec analyze result {args.from_analysis} (fragments labelled by accumulation, no hand labels)",
        "videos": [str(video)], "train_crops": len(labelled), "animals": args.animals,
        "fragments": len(frags.fragments), "global_fragments": len(frags.globals),
        "accepted_global_fragments": len(acc.accepted), "labelled_fragments": len(acc.labels),
        "labelled_animal_frames": acc.frames_labelled(frags), "accumulation": acc.rounds,
        # [track id, first frame, last frame, identity index] of each labelled fragment: what the labels were
        "fragment_labels": [[frags.fragments[f].track, int(cols["frame"][frags.fragments[f].rows[0]]),
                             int(cols["frame"][frags.fragments[f].rows[-1]]), k]
                            for f, k in sorted(acc.labels.items())],
        "fragment_settings": asdict(s),
    }
    _record_effective(args, settings, params)
    _export(args, trained, cfg, identity_names(args.animals), settings, summary_data, started)
    return 0


def _record_effective(args: argparse.Namespace, settings: Any, params: Any) -> None:
    """The values used where a flag was left to its mode's default, so the training summary says them."""
    args.crop_px, args.align, args.lr, args.lr_decay = settings.crop_px, bool(settings.align), params.lr, params.k


def _score_models(args: argparse.Namespace, data: Any) -> dict[str, Any]:
    """Scores of the exported NAME-frame and NAME models on `data`, through LocalBackend."""
    import numpy as np

    from services.idnet.evaluate import identity_scores
    from services.idnet.masking import MaskSettings
    from sipec.cli import CliError
    from sipec.serving.backends import LocalBackend
    from sipec.serving.batching import DEFAULT_BATCH_SIZE, predict_fixed
    from sipec.serving.repository import ModelRepository

    repo = ModelRepository(args.model_repo)
    out: dict[str, Any] = {}
    for role, name in (("frame", args.model_name + FRAME_SUFFIX), ("recurrent", args.model_name)):
        if not repo.versions(name):
            continue
        backend = LocalBackend(repo, name)
        try:
            info = backend.metadata().info
            names = list(info["class_names"])
            if names != list(data.identity_names):
                raise CliError(f"model {name} identities {names} differ from the data's {data.identity_names}")
            settings = MaskSettings.from_json(info["masking"])
            if settings.input_size != data.crops.shape[1]:
                raise CliError(f"model {name} takes {settings.input_size}px crops; pass --input-size "
                               f"{settings.input_size} --crop-px {settings.crop_px}")
            idx = data.sequence_indices(int(info["t"]))
            probs = []
            for start in range(0, len(data), 64):
                batch = np.stack([data.sequence(row, settings) for row in idx[start:start + 64]])
                probs.append(predict_fixed(backend, {"crops": batch}, DEFAULT_BATCH_SIZE).outputs["probabilities"])
            out[role] = identity_scores(data.identity, np.concatenate(probs), names)
        finally:
            backend.close()
    if not out:
        raise CliError(f"--model-repo {args.model_repo}: no model {args.model_name} or {args.model_name}{FRAME_SUFFIX}")
    return out


def _leave_one_video_out(args: argparse.Namespace, data: Any, settings: Any) -> dict[str, Any]:
    import numpy as np

    from services.idnet.evaluate import identity_scores
    from services.idnet.train import fit_idnet, predict_frame, predict_recurrent
    from sipec.cli import CliError
    from sipec.training import seed_everything

    if len(data.videos) < 2:
        raise CliError("--leave-one-video-out needs 2 or more --data sources (videos)")
    cfg = _config(args, len(data.identity_names))
    folds = {}
    for v, video in enumerate(data.videos):
        seed_everything(args.seed)
        train, test = data.subset(np.flatnonzero(data.video != v)), data.subset(np.flatnonzero(data.video == v))
        trained = fit_idnet(train, cfg, settings, _params(args))
        fold = {"frame": identity_scores(test.identity, predict_frame(trained, test), data.identity_names)}
        if cfg.t:
            fold["recurrent"] = identity_scores(test.identity, predict_recurrent(trained, test), data.identity_names)
        folds[video] = fold
    return {"leave_one_video_out": folds,
            "mean_accuracy": {role: float(np.mean([f[role]["accuracy"] for f in folds.values()]))
                              for role in next(iter(folds.values()))}}


def _protocols(args: argparse.Namespace, data: Any, settings: Any) -> dict[str, Any]:
    """--folds and --train-sizes: an IdNet trained (with the network flags) per fold or size, scored on its
    held-out frames (every animal of a frame on one side)."""
    from dataclasses import replace

    import numpy as np

    from services.idnet.evaluate import identity_scores
    from services.idnet.train import fit_idnet, predict_frame, predict_recurrent
    from sipec import protocols
    from sipec.cli import CliError
    from sipec.training import seed_everything

    keys = sorted({(int(v), int(f)) for v, f in zip(data.video, data.frame, strict=True)})   # frames, in order
    index = {k: i for i, k in enumerate(keys)}
    row_key = np.asarray([index[(int(v), int(f))] for v, f in zip(data.video, data.frame, strict=True)])
    sizes: list[int] = args.train_sizes
    try:
        splits = protocols.block_folds([data.videos[v] for v, _ in keys], args.folds) if args.folds else []
        test, trains = (protocols.ablation_split(len(keys), sizes, args.holdout_fraction, args.seed) if sizes
                        else ([], []))
    except ValueError as exc:
        raise CliError(f"--folds/--train-sizes/--holdout-fraction: {exc}") from exc
    runs = [("fold", k + 1, tr, te) for k, (tr, te) in enumerate(splits)] + \
        [("train_size", len(tr), tr, test) for tr in trains]
    cfg = _config(args, len(data.identity_names))
    rows: list[dict[str, Any]] = []
    for kind, value, tr, te in protocols.progress(runs, "idnet protocol"):
        seed_everything(args.seed)
        train = data.subset(np.flatnonzero(np.isin(row_key, tr)))
        held = data.subset(np.flatnonzero(np.isin(row_key, te)))
        if not len(train) or not len(held):
            raise CliError(f"{kind} {value}: no crops on one side of the split")
        params = _params(args)
        if kind == "train_size":   # as many steps as the whole pool would get: labels, not training time
            epochs = protocols.equal_steps_epochs(params.epochs, len(keys) - len(test), len(tr))
            params = replace(params, epochs=epochs)
        trained = fit_idnet(train, cfg, settings, params)
        row: dict[str, Any] = {kind: value, "epochs": params.epochs, "train_frames": len(tr), "test_frames": len(te),
                               "frame": identity_scores(held.identity, predict_frame(trained, held),
                                                        data.identity_names)}
        if cfg.t:
            row["recurrent"] = identity_scores(held.identity, predict_recurrent(trained, held), data.identity_names)
        for role in ("frame", "recurrent"):
            if role in row:
                row[f"{role}_accuracy"] = row[role]["accuracy"]
                row[f"{role}_chance"] = row[role]["chance_shuffled_labels"]
        print(f"idnet: {kind} {value}: accuracy " + ", ".join(
            f"{r} {row[f'{r}_accuracy']:.3f}" for r in ("frame", "recurrent") if r in row), flush=True)
        rows.append(row)
    role = "recurrent" if cfg.t else "frame"
    metrics = [f"{r}_{m}" for r in ("frame", "recurrent") if r == "frame" or cfg.t for m in ("accuracy", "chance")]
    out: dict[str, Any] = {}
    if splits:
        out["folds"] = rows[:len(splits)]
        out["folds_summary"] = protocols.summarize(out["folds"], metrics)
        s = out["folds_summary"][f"{role}_accuracy"]
        print(f"idnet: {args.folds}-fold {role} accuracy {s['mean']:.3f} +- {s['sem']:.3f} (mean +- s.e.m.; "
              f"shuffled-label chance {out['folds_summary'][f'{role}_chance']['mean']:.3f})")
    if sizes:
        out["train_sizes"] = rows[len(splits):]
        out["peak"] = protocols.peak_point(sizes, [r[f"{role}_accuracy"] for r in out["train_sizes"]], 0.95)
        stem = args.plot or (Path(args.json).with_suffix("") if args.json else Path("idnet-ablation"))
        out["plot"] = [str(p) for p in protocols.plot_ablation(out["train_sizes"], f"{role}_accuracy", stem,
                                                               f"IdNet ({role} network): identity accuracy")]
        print(f"idnet: accuracy within 95% of the best ({out['peak']['peak']:.3f}) from {out['peak']['size']} "
              f"labelled frames; plot {out['plot'][0]}")
    return out


def run_evaluate(args: argparse.Namespace) -> int:
    from services.idnet.data import time_split
    from services.idnet.evaluate import format_scores
    from sipec.cli import CliError
    from sipec.training import ensure_keras_home

    ensure_keras_home()
    _check_fraction("--test-fraction", args.test_fraction)
    settings = _settings(args)
    if args.folds or args.train_sizes:
        if args.model_repo or args.leave_one_video_out:
            raise CliError("--folds/--train-sizes train their own models: leave out --model-repo and "
                           "--leave-one-video-out")
        result = _protocols(args, _load(args, settings), settings)
    elif args.leave_one_video_out:
        result = _leave_one_video_out(args, _load(args, settings), settings)
        for video, fold in result["leave_one_video_out"].items():
            for role, s in fold.items():
                print(format_scores(f"idnet left out {video} {role}", s))
        print(f"idnet leave-one-video-out mean accuracy: {result['mean_accuracy']}")
    else:
        if not args.model_repo:
            raise CliError("--model-repo is needed (or use --leave-one-video-out)")
        if not Path(args.model_repo).is_dir():
            raise CliError(f"--model-repo: directory not found: {args.model_repo}")
        from services.idnet.masking import MaskSettings
        from sipec.serving.backends import LocalBackend
        from sipec.serving.repository import ModelRepository

        repo = ModelRepository(args.model_repo)
        name = args.model_name if repo.versions(args.model_name) else args.model_name + FRAME_SUFFIX
        if not repo.versions(name):
            raise CliError(f"--model-repo {args.model_repo}: no model {args.model_name} or "
                           f"{args.model_name}{FRAME_SUFFIX}")
        b = LocalBackend(repo, name)
        try:
            settings = MaskSettings.from_json(b.metadata().info["masking"])   # crops as the model was trained
        finally:
            b.close()
        data = _load(args, settings)
        if args.test_fraction < 1.0:
            _, te = time_split(data, 1.0 - args.test_fraction)
            data = data.subset(te)
        result = _score_models(args, data)
        for role, s in result.items():
            print(format_scores(f"idnet {role}", s))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def run_serve(args: argparse.Namespace) -> int:
    from services.idnet.service import IdNetServicer
    from sipec.serving.module import run_module_server
    from sipec.v1 import idnet_pb2_grpc

    def make(backend: Any, runtime: Any) -> Any:
        return IdNetServicer(backend, runtime, max_batch=args.max_batch, max_tracks=args.max_tracks,
                             batch_size=args.batch_size)

    return run_module_server(args, "idnet", "sipec.v1.IdNet", make, idnet_pb2_grpc.add_IdNetServicer_to_server)
