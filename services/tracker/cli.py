"""The tracker's `sipec` subcommands: train/evaluate depth3d, evaluate/serve tracker.

    sipec train depth3d --positions CSV --out REPO [--model-name depth3d]
    sipec evaluate depth3d --positions CSV [--folds 10] [--model-repo REPO]
    sipec evaluate tracker --gt annotations.json|FOLDER [--pred TRACKS_JSON] [--simulated-idnet-accuracy P
                           | --idnet-repo REPO [--idnet-model idnet]] [--start FRAME] [--frames N]
    sipec serve tracker --model-repo REPO [--port 50055] [--max-tracks 64] [--max-streams 16]

Heavy imports happen inside the command functions, so `sipec --help` stays fast.
"""

from __future__ import annotations

import argparse

DEFAULT_PORT = 50055


def register_train(sub: argparse._SubParsersAction) -> None:
    from services.tracker.train import add_depth3d_train_arguments

    p = sub.add_parser("depth3d", help="3D position from one camera: Isomap + least squares (tracker)",
                       description="Fit SIPEC's 3D-from-one-camera model (Isomap of mask size and position, then "
                                   "ordinary least squares) on a positions CSV and export it as a SavedModel.")
    add_depth3d_train_arguments(p)
    p.set_defaults(func=_train_depth3d)


def register_evaluate(sub: argparse._SubParsersAction) -> None:
    from services.tracker.evaluate import add_depth3d_evaluate_arguments, add_tracker_evaluate_arguments

    p = sub.add_parser("depth3d", help="3D position: cross-validated RMSE per axis",
                       description="K-fold cross-validation (contiguous in time) of the depth3d method on a "
                                   "positions CSV: RMSE per axis, relative to the room and to baselines; "
                                   "optionally the trained model on the same rows.")
    add_depth3d_evaluate_arguments(p)
    p.set_defaults(func=_evaluate_depth3d)
    t = sub.add_parser("tracker", help="identity switches, IDF1 and MOTA against ground-truth tracks",
                       description="Score tracks (or run the tracker on the ground truth's own masks) against "
                                   "ground-truth tracks: identity switches, IDF1, MOTA, identity accuracy.")
    add_tracker_evaluate_arguments(t)
    t.set_defaults(func=_evaluate_tracker)


def register_serve(sub: argparse._SubParsersAction) -> None:
    from services.tracker.options import TrackerLimits
    from services.tracker.service import DEFAULT_MODEL
    from sipec.serving.cli import add_server_arguments
    from sipec.serving.module import add_backend_arguments

    limits = TrackerLimits()
    p = sub.add_parser("tracker", help="the Tracker gRPC service (Track stream, Estimate3D)",
                       description="Serve sipec.v1.Tracker: tracks, identities and interactions per video stream, "
                                   "and 3D positions from the depth model of the repository (sipec train depth3d; "
                                   "optional: tracking works without it).")
    add_server_arguments(p, default_port=DEFAULT_PORT)
    add_backend_arguments(p, default_model=DEFAULT_MODEL)
    g = p.add_argument_group("tracker limits")
    g.add_argument("--max-tracks", type=int, default=limits.max_tracks,
                   help="live tracks per stream; beyond it a frame gets RESOURCE_EXHAUSTED "
                        f"(default {limits.max_tracks})")
    g.add_argument("--max-instances", type=int, default=limits.max_instances,
                   help=f"instances per frame (default {limits.max_instances})")
    g.add_argument("--max-lost-frames", type=int, default=limits.max_lost_frames,
                   help=f"largest look-back a stream may ask for (default {limits.max_lost_frames})")
    g.add_argument("--max-identity-window", type=int, default=limits.max_identity_window,
                   help=f"largest identity window a stream may ask for (default {limits.max_identity_window})")
    g.add_argument("--max-streams", type=int, default=16, help="concurrent Track streams (default 16)")
    p.set_defaults(func=_serve_tracker)


def _train_depth3d(args: argparse.Namespace) -> int:
    from services.tracker.train import train_depth3d

    train_depth3d(args)
    return 0


def _evaluate_depth3d(args: argparse.Namespace) -> int:
    from services.tracker.evaluate import evaluate_depth3d

    return evaluate_depth3d(args)


def _evaluate_tracker(args: argparse.Namespace) -> int:
    from services.tracker.evaluate import evaluate_tracker

    return evaluate_tracker(args)


def _serve_tracker(args: argparse.Namespace) -> int:
    from services.tracker.options import TrackerLimits
    from services.tracker.service import TrackerService, backend_factory_from_args
    from sipec.cli import CliError
    from sipec.serving.module import run_module_server
    from sipec.v1 import tracker_pb2_grpc

    try:
        limits = TrackerLimits(max_tracks=args.max_tracks, max_instances=args.max_instances,
                               max_lost_frames=args.max_lost_frames, max_identity_window=args.max_identity_window)
    except ValueError as exc:
        raise CliError(f"--{str(exc).split(' ')[0].replace('_', '-')}: {exc}") from None
    if args.max_streams < 1:
        raise CliError("--max-streams must be at least 1")
    factory = backend_factory_from_args(args)

    def make_servicer(backend, runtime):
        return TrackerService(backend, runtime, limits=limits, max_streams=args.max_streams, backend_factory=factory,
                              batch_size=args.batch_size)

    return run_module_server(args, "tracker", TrackerService.service_name, make_servicer,
                             tracker_pb2_grpc.add_TrackerServicer_to_server)
