"""`sipec evaluate depth3d` and `sipec evaluate tracker`: scores printed as a table and written as JSON."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from sipec.data.atomic import write_text_atomic

# ---------------------------------------------------------------------------------------------
# depth3d
# ---------------------------------------------------------------------------------------------


def add_depth3d_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from services.tracker import depth3d

    p.add_argument("--positions", required=True, metavar="CSV",
                   help="positions CSV (sipec synth's positions_3d.csv); camera.json beside it gives the room size")
    p.add_argument("--folds", type=int, default=10, help="cross-validation folds, contiguous in time (default 10)")
    p.add_argument("--model-repo", default=None, metavar="REPO",
                   help="also score the trained model REPO/<model-name> (newest version) on these rows")
    p.add_argument("--model-name", default="depth3d", help="model to score with --model-repo (default depth3d)")
    p.add_argument("--neighbors", type=int, default=depth3d.N_NEIGHBORS, help="Isomap neighbours in the CV fits")
    p.add_argument("--components", type=int, default=depth3d.N_COMPONENTS, help="Isomap components in the CV fits")
    p.add_argument("--isomap-rows", type=int, default=depth3d.MAX_FIT, help="Isomap training rows in the CV fits")
    p.add_argument("--seed", type=int, default=0, help="seed of the Isomap row samples (default 0)")
    p.add_argument("--out", default=None, metavar="JSON", help="write the scores here as JSON")


def evaluate_depth3d(args: argparse.Namespace) -> int:
    from services.tracker import depth3d
    from services.tracker.data import load_positions
    from sipec.cli import CliError

    try:
        data = load_positions(args.positions)
    except ValueError as exc:
        raise CliError(f"--positions: {exc}") from None
    if not 2 <= args.folds <= data.area_uv.shape[0]:
        raise CliError(f"--folds must be 2 to {data.area_uv.shape[0]} (the rows with a mask), not {args.folds}")
    try:
        cv = depth3d.cross_validate(data.area_uv, data.xyz, folds=args.folds, n_neighbors=args.neighbors,
                                    n_components=args.components, max_fit=args.isomap_rows, seed=args.seed)
    except ValueError as exc:
        raise CliError(f"--positions {args.positions}: {exc}") from None
    spread = data.xyz.max(axis=0) - data.xyz.min(axis=0)
    report: dict = {"positions": str(args.positions), "rows": cv.rows, "folds": cv.folds,
                    "folds_kind": "contiguous blocks of frames", "room": list(data.room) if data.room else None,
                    "range": spread.tolist(), "std": data.xyz.std(axis=0).tolist(),
                    "cv_rmse": cv.rmse.tolist(), "cv_rmse_ols_only": cv.rmse_ols_only.tolist(),
                    "cv_rmse_mean_baseline": cv.rmse_mean.tolist()}
    rows = [("depth3d (Isomap + OLS), 10-fold CV" if args.folds == 10 else f"depth3d, {args.folds}-fold CV", cv.rmse),
            ("OLS on 1/sqrt(a), a, u, v only, CV", cv.rmse_ols_only),
            ("mean position (trivial baseline), CV", cv.rmse_mean)]
    if args.model_repo:
        pred, version = _predict_with_saved_model(args.model_repo, args.model_name, data.area_uv)
        trained = depth3d.rmse_per_axis(pred, data.xyz)
        report["trained_model"] = {"model": args.model_name, "version": version, "rmse": trained.tolist()}
        rows.append((f"trained model {args.model_name} v{version} (SavedModel) on these rows", trained))
    print(f"depth3d on {args.positions}: {cv.rows} instances with a mask")
    header = "| method | RMSE x | RMSE y | RMSE z |"
    print(header + "\n|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r[0]:.4f} | {r[1]:.4f} | {r[2]:.4f} |")
    if data.room:
        rel = cv.rmse / np.asarray(data.room)
        report["cv_rmse_relative_to_room"] = rel.tolist()
        print(f"CV RMSE relative to the room (floor {data.room[0]} x {data.room[1]}, wall height {data.room[2]}): "
              f"x {100 * rel[0]:.1f}%, y {100 * rel[1]:.1f}%, z {100 * rel[2]:.1f}%")
    rel_range = cv.rmse / np.where(spread > 0, spread, 1.0)
    report["cv_rmse_relative_to_range"] = rel_range.tolist()
    print(f"CV RMSE relative to the range of the true positions: x {100 * rel_range[0]:.1f}%, "
          f"y {100 * rel_range[1]:.1f}%, z {100 * rel_range[2]:.1f}%")
    if args.out:
        write_text_atomic(args.out, json.dumps(report, indent=1))
    return 0


def _predict_with_saved_model(repo: str, name: str, area_uv: np.ndarray) -> tuple[np.ndarray, int]:
    from services.tracker.model import INPUT_NAME, OUTPUT_NAME
    from sipec.cli import CliError
    from sipec.serving.errors import ServingError
    from sipec.serving.models import LoadedModel
    from sipec.serving.repository import ModelRepository

    if not Path(repo).is_dir():
        raise CliError(f"--model-repo: directory not found: {repo}")
    try:
        model = LoadedModel(ModelRepository(repo).get(name))
    except ServingError as exc:
        raise CliError(f"--model-repo: {exc}") from None
    out = model.predict({INPUT_NAME: area_uv.astype(np.float32)}, None, [OUTPUT_NAME])[OUTPUT_NAME]
    return np.asarray(out, dtype=np.float64), model.version.version


# ---------------------------------------------------------------------------------------------
# tracker
# ---------------------------------------------------------------------------------------------


def add_tracker_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    from services.tracker.options import IDENTITY_EVIDENCE, MATCHING_METHODS, MOTION_MODELS, TrackerOptions

    d = TrackerOptions()
    p.add_argument("--gt", required=True, metavar="PATH",
                   help="ground-truth tracks: a COCO annotations file with track_id (sipec synth's annotations.json "
                        "or its folder), the sleap-flies-clip folder (identities labelled, masks DERIVED), or a "
                        "peer's trajectories.csv (idtracker.ai: time,x1,y1,...; with --pred OUT/VIDEO)")
    p.add_argument("--max-px", type=float, default=15.0,
                   help="with trajectories.csv: a track matches a reference animal within this many pixels of its "
                        "centre (default 15)")
    p.add_argument("--pred", default=None, metavar="TRACKS_JSON",
                   help="tracks to score (COCO results + frame_index, track_id, identity; see --save-pred); "
                        "without it the tracker runs on the ground truth's own masks (ids removed, order shuffled)")
    g = p.add_argument_group("tracker (without --pred)")
    g.add_argument("--matching", choices=MATCHING_METHODS, default=d.matching, help=f"default {d.matching}")
    g.add_argument("--min-iou", type=float, default=d.min_iou, help=f"default {d.min_iou}")
    g.add_argument("--max-lost-frames", type=int, default=d.max_lost_frames, help=f"default {d.max_lost_frames}")
    g.add_argument("--identity-window", type=int, default=d.identity_window, help=f"default {d.identity_window}")
    g.add_argument("--max-distance", type=float, default=d.max_distance,
                   help="pixels: second matching stage by distance to the predicted centre for what overlap left "
                        "over (default 0: an automatic gate with --motion kalman, off with --motion none)")
    g.add_argument("--motion", choices=MOTION_MODELS, default=d.motion,
                   help=f"kalman: match to the predicted position; none: to the last appearance, as the paper "
                        f"(default {d.motion})")
    g.add_argument("--animals", type=int, default=d.animals,
                   help="the known number of animals: at most this many tracks (default 0: unknown)")
    g.add_argument("--identity-evidence", choices=IDENTITY_EVIDENCE, default=d.identity_evidence,
                   help="which frames' IdNet answers count for a track's identity: restart (every frame, afresh after "
                        "each contact with another animal), apart (frames apart only), all (the paper) "
                        f"(default {d.identity_evidence})")
    g.add_argument("--simulated-idnet-accuracy", type=float, default=0.0, metavar="P",
                   help="feed SIMULATED IdNet probabilities (the true identity, wrong in bursts, at per-frame "
                        "accuracy P); 0 = no identities (default)")
    g.add_argument("--simulated-idnet-burst", type=float, default=5.0, metavar="FRAMES",
                   help="mean length of a simulated IdNet error burst (default 5)")
    g.add_argument("--idnet-repo", default=None, metavar="REPO",
                   help="identities from a trained IdNet (sipec train idnet --out REPO), run in-process through the "
                        "IdNet service on the tracker's own tracks; not with --simulated-idnet-accuracy")
    g.add_argument("--idnet-model", default="idnet", metavar="NAME",
                   help="IdNet model in --idnet-repo (default idnet: the recurrent one; idnet-frame: per frame)")
    g.add_argument("--start", type=int, default=0, metavar="FRAME",
                   help="begin at this frame index (the tracker starts fresh there; default 0)")
    g.add_argument("--frames", type=int, default=None, help="only the first N frames (from --start)")
    g.add_argument("--frame-step", type=int, default=1, help="use every K-th frame (default 1: all)")
    g.add_argument("--seed", type=int, default=0, help="seed of the shuffling and the simulated IdNet")
    g.add_argument("--save-pred", default=None, metavar="TRACKS_JSON", help="write the tracks here")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a match in the metrics (default 0.5)")
    p.add_argument("--density-dir", default=None, metavar="DIR",
                   help="write a position density map (PNG) per identity, or per track without identities")
    p.add_argument("--out", default=None, metavar="JSON", help="write the scores here as JSON")


def evaluate_tracker(args: argparse.Namespace) -> int:
    from services.tracker.data import load_ground_truth, read_tracks_json, write_tracks_json
    from services.tracker.options import resolve_options
    from services.tracker.run_tracking import score_tracks, track_ground_truth
    from services.tracker.simulated_idnet import SimulatedIdNet
    from sipec.cli import CliError
    from sipec.serving.errors import InvalidInput

    if args.frame_step < 1 or (args.frames is not None and args.frames < 1):
        raise CliError("--frame-step and --frames must be at least 1")
    if str(args.gt).lower().endswith(".csv"):
        return _evaluate_against_trajectories(args)
    if args.start < 0:
        raise CliError(f"--start must be >= 0, not {args.start}")
    if not 0.0 < args.iou <= 1.0:
        raise CliError(f"--iou must be in (0, 1], not {args.iou}")
    if args.idnet_repo and args.simulated_idnet_accuracy:
        raise CliError("--idnet-repo and --simulated-idnet-accuracy are mutually exclusive: identities come from a "
                       "trained IdNet or from the simulation, not both")
    if args.idnet_repo and args.pred:
        raise CliError("--idnet-repo runs the tracker; it does not go with --pred (tracks already made)")
    if args.idnet_repo and not Path(args.idnet_repo).is_dir():
        raise CliError(f"--idnet-repo: {args.idnet_repo}: model repository not found")
    try:
        gt = load_ground_truth(args.gt, max_frames=args.frames, start=args.start)
    except (ValueError, OSError) as exc:
        raise CliError(f"--gt: {exc}") from None
    gt = replace(gt, frames=gt.frames[::args.frame_step])
    config: dict = {"gt": gt.source, "frames": len(gt.frames), "frame_step": args.frame_step,
                    "first_frame": gt.frames[0].frame if gt.frames else None,
                    "last_frame": gt.frames[-1].frame if gt.frames else None}
    if args.pred:
        try:
            tracked = read_tracks_json(args.pred)
        except ValueError as exc:
            raise CliError(f"--pred: {exc}") from None
        config["pred"] = str(args.pred)
    else:
        try:
            opts = resolve_options(args.matching, args.min_iou, args.max_lost_frames, args.identity_window,
                                   max_distance=args.max_distance, motion=args.motion, animals=args.animals,
                                   identity_evidence=args.identity_evidence)
        except InvalidInput as exc:
            raise CliError(f"tracker options (--matching, --min-iou, --max-lost-frames, --identity-window, "
                           f"--max-distance, --motion, --animals, --identity-evidence): {exc}") from None
        idnet = None
        if args.simulated_idnet_accuracy:
            try:
                idnet = SimulatedIdNet(gt.identity_names, args.simulated_idnet_accuracy, args.simulated_idnet_burst,
                                       seed=args.seed)
            except ValueError as exc:
                raise CliError(f"--simulated-idnet-accuracy: {exc}") from None
        tracked = track_ground_truth(gt, opts, idnet, seed=args.seed)
        identities = (f"SIMULATED IdNet, per-frame accuracy {args.simulated_idnet_accuracy}, "
                      f"mean error burst {args.simulated_idnet_burst} frames") if idnet else "none"
        if args.idnet_repo:
            tracked, identities, config["idnet"] = _real_idnet(args, gt, tracked, opts)
        config.update({"detections": "ground-truth masks (oracle detections, ids removed, order shuffled)",
                       "options": vars(opts), "identities": identities})
        if args.save_pred:
            write_tracks_json(args.save_pred, tracked)
    try:
        score = score_tracks(gt, tracked, args.iou)
    except ValueError as exc:
        raise CliError(f"--pred: {exc}") from None
    report = {"config": config, "tracks": score.tracks.to_dict(),
              "identities": score.identities.to_dict() if score.identities else None,
              "identity_accuracy": score.identity_accuracy, "notes": gt.notes}
    _print_tracker_report(gt.source, config, score)
    if args.density_dir:
        paths = _write_density(tracked, gt.image_size, args.density_dir)
        report["density_maps"] = [str(p) for p in paths]
        print(f"density maps: {', '.join(str(p) for p in paths)}")
    if args.out:
        write_text_atomic(args.out, json.dumps(report, indent=1))
    return 0


def _evaluate_against_trajectories(args: argparse.Namespace) -> int:
    """`sipec evaluate tracker --gt trajectories.csv --pred OUT/VIDEO`: a `sipec analyze` result against a peer's
    trajectories, matched by centre distance."""
    from services.tracker.trajectories import (
        has_identities,
        load_trajectories,
        score_against_trajectories,
        tracks_from_results,
    )
    from sipec.cli import CliError

    if not args.pred:
        raise CliError("--gt trajectories.csv scores a `sipec analyze` result: give it with --pred OUT/VIDEO")
    try:
        reference = load_trajectories(args.gt)
    except ValueError as exc:
        raise CliError(f"--gt: {exc}") from None
    if not args.max_px > 0:
        raise CliError(f"--max-px: the matching distance must be > 0 pixels, not {args.max_px}")
    scores = {}
    try:
        for by in ("track", "identity") if has_identities(args.pred) else ("track",):
            scores[by] = score_against_trajectories(reference, tracks_from_results(args.pred, by), args.max_px)
    except (ValueError, OSError) as exc:
        raise CliError(f"--pred: {exc}") from None
    first = scores["track"]
    print(f"{args.pred} against the trajectories {args.gt} (a peer's output, not ground truth), matched within "
          f"{args.max_px:g} px: {first['frames']} frames, {first['animals']} animals")
    print("| by | ids | frames with all animals | identity accuracy | IDF1 | ID switches | MOTA | misses "
          "| false pos. |\n|---|---|---|---|---|---|---|---|---|")
    for by, score in scores.items():
        print(f"| {by} | {score['tracks']} | {score['frames_with_all_animals']} | {score['identity_accuracy']:.4f} "
              f"| {score['idf1']:.4f} | {score['id_switches']} | {score['mota']:.4f} | {score['misses']} "
              f"| {score['false_positives']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(scores, indent=2) + "\n")   # {"track": ..., "identity": ... if any}
    return 0


def _real_idnet(args: argparse.Namespace, gt, tracked, opts) -> tuple[list, str, dict]:
    """Identities of the tracks from the trained IdNet of --idnet-repo: (tracks, description, report entry)."""
    import time

    from services.tracker.real_idnet import (
        argmax_accuracy,
        check_names,
        frame_images,
        identify_tracks,
        open_idnet,
        smooth_identities,
    )
    from sipec.cli import CliError

    try:
        model = open_idnet(args.idnet_repo, args.idnet_model)
    except ValueError as exc:
        raise CliError(f"--idnet-repo: {exc}") from None
    try:
        try:
            check_names(model, gt)
        except ValueError as exc:
            raise CliError(f"--idnet-repo: {exc}") from None
        t0 = time.perf_counter()
        try:
            out = identify_tracks(model, tracked, frame_images(args.gt, [f.frame for f in gt.frames]))
        except ValueError as exc:
            raise CliError(f"--gt: {exc}") from None
        seconds = time.perf_counter() - t0
    finally:
        model.close()
    if out.errors:
        print(f"idnet: {len(out.errors)} crop(s) answered with an error, e.g. {out.errors[0]}")
    entry = {"repo": str(model.repo), "model": model.name, "version": model.version, "t": model.t,
             "crop_px": model.crop_px, "class_names": model.names, "crops": out.crops,
             "identified": len(out.probabilities), "errors": len(out.errors), "seconds": round(seconds, 2),
             "crops_per_s": round(out.crops / seconds, 1) if seconds > 0 else None}
    entry["argmax_accuracy"] = argmax_accuracy(gt, tracked, out, args.iou)
    print(f"idnet: {out.crops} crops of {len({t.track_id for t in tracked})} tracks through IdentifyStream in "
          f"{seconds:.1f} s ({entry['crops_per_s']} crops/s)")
    if entry["argmax_accuracy"] is not None:
        print(f"idnet alone (top class per crop, before smoothing): accuracy {entry['argmax_accuracy']:.4f}")
    smoothed = smooth_identities(tracked, out, opts)
    desc = (f"IdNet {model.repo}/{model.name} v{model.version} (T={model.t}, crop {model.crop_px} px, "
            f"identities {', '.join(model.names)}), smoothed over {opts.identity_window} frames")
    return smoothed, desc, entry


def _print_tracker_report(source: str, config: dict, score) -> None:
    first = config.get("first_frame")
    print(f"tracker on {source}: {config['frames']} frames"
          + (f" from frame {first}" if first else "")
          + (f" (every {config['frame_step']}th)" if config["frame_step"] > 1 else ""))
    if "detections" in config:
        print(f"detections: {config['detections']}; identities: {config['identities']}")
    print("| hypotheses | ID switches | IDF1 | MOTA | IDP | IDR | misses | false pos. | tracks (gt) |")
    print("|---|---|---|---|---|---|---|---|---|")
    rows = [("track ids", score.tracks)] + ([("identities", score.identities)] if score.identities else [])
    for name, r in rows:
        print(f"| {name} | {r.id_switches} | {r.idf1:.4f} | {r.mota:.4f} | {r.idp:.4f} | {r.idr:.4f} | {r.misses} | "
              f"{r.false_positives} | {r.hyp_tracks} ({r.gt_tracks}) |")
    if score.identity_accuracy is not None:
        print(f"identity accuracy (matched instance carries its own identity name): {score.identity_accuracy:.4f}")


def _write_density(tracked, size: tuple[int, int], out_dir: str) -> list[Path]:
    from sipec.reports.density import density_maps

    use_identity = any(t.identity for t in tracked)
    points: dict[str, list[tuple[float, float]]] = {}
    for t in tracked:
        key = t.identity if use_identity else f"track_{t.track_id}"
        if key:
            points.setdefault(key, []).append(t.detection.com)
    maps = density_maps({k: np.asarray(v) for k, v in points.items()}, size, out_dir)
    return [p for _, p in maps.values() if p is not None]
