"""`sipec analyze`, `sipec up`, `sipec down`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_STATE = Path(".sipec")
EXIT_BAD_INPUT = 3   # every failed video failed on its input; the batch Job's podFailurePolicy fails the index


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("analyze", help="videos in, behaviour data out (results table, pose, video, ethogram)",
                       description="Stream each video through the modules named in the config and write one folder "
                                   "of results per video. In-process by default; over gRPC with --services.")
    a.add_argument("inputs", nargs="+", metavar="VIDEO|FOLDER", help="video files, or folders of videos")
    a.add_argument("--models", type=Path, help="model repository (in-process analysis)")
    a.add_argument("--out", type=Path, required=True, help="output folder (one subfolder per video)")
    a.add_argument("--config", type=Path, help="pipeline.yaml (modules, options, outputs)")
    a.add_argument("--services", help="'local' (the services `sipec up` started) or an endpoints.yaml; "
                                      "default: run the modules in this process")
    a.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="where `sipec up` keeps its state")
    a.add_argument("--resume", action="store_true",
                   help="continue each video after its last completed frame (checked to be the same video file and "
                        "model versions); a video already finished is left as it is")
    a.add_argument("--folder-names", choices=("stem", "file"), default="stem",
                   help="name each video's result folder by its stem (default: a.mp4 -> OUT/a) or by its whole "
                        "file name (OUT/a.mp4: videos of one folder never share a result folder, as the batch Job "
                        "needs)")
    a.add_argument("--animals", type=int, default=None, metavar="N",
                   help="the known number of animals (sets tracker.animals of pipeline.yaml): at most N tracks, "
                        "fragments stitched into N")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.set_defaults(func=run_analyze)

    u = sub.add_parser("up", help="start every module service on this machine",
                       description="Start each module as its own `sipec serve` process, wait until healthy, write "
                                   "<state>/endpoints.yaml for `sipec analyze --services local`.")
    u.add_argument("--models", type=Path, required=True, help="model repository")
    u.add_argument("--modules", default=None, help="comma-separated (default: every module with a model in REPO)")
    u.add_argument("--model-server", action="store_true",
                   help="also start `sipec serve model-server` and let the modules call it (as in a cluster)")
    u.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    u.add_argument("--timeout-s", type=float, default=180.0)
    u.set_defaults(func=run_up)

    d = sub.add_parser("down", help="stop the services `sipec up` started")
    d.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    d.set_defaults(func=run_down)


def _progress_factory(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    def factory(video: Path, _total: int):
        bar = tqdm(desc=video.name, unit="frame", dynamic_ncols=True)

        def update(index: int, total: int) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.n = index + 1
            bar.refresh()
        return update
    return factory


def run_analyze(args: argparse.Namespace) -> int:
    from orchestrator.analyze import analyze, output_names
    from orchestrator.config import ConfigError, load_config
    from orchestrator.local import ENDPOINTS_FILE
    from orchestrator.modules import Connector, EndpointsError, ModuleSetupError, read_endpoints
    from sipec.cli import CliError
    from sipec.video import find_videos

    try:
        config = load_config(args.config)
        if args.animals is not None:
            if args.animals < 1:
                raise ConfigError(f"--animals: must be at least 1, not {args.animals}")
            config.tracker["animals"] = args.animals
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    videos = find_videos(args.inputs)
    if not videos:
        raise CliError(f"no videos found in {', '.join(args.inputs)}")
    endpoints = None
    if args.services:
        path = args.state_dir / ENDPOINTS_FILE if args.services == "local" else Path(args.services)
        try:
            endpoints = read_endpoints(path)
        except (ModuleSetupError, EndpointsError) as exc:
            raise CliError(str(exc)) from exc
    elif args.models is None:
        raise CliError("give --models REPO (in-process) or --services local|endpoints.yaml")
    elif not args.models.is_dir():
        raise CliError(f"--models: directory not found: {args.models}")
    try:
        connector = Connector(config.modules, args.models, endpoints)
    except (ModuleSetupError, EndpointsError) as exc:
        raise CliError(str(exc)) from exc
    try:
        try:   # modules that cannot be reached at all fail the command now, with the reason
            connector.for_video(output_names(videos, args.folder_names)[videos[0]])
        except (ModuleSetupError, EndpointsError) as exc:
            raise CliError(str(exc)) from exc
        outcomes = analyze(videos, args.out, connector, config, resume=args.resume,
                           progress_factory=_progress_factory(args.quiet), folder_names=args.folder_names)
    finally:
        connector.close()
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        if o.ok and o.already_finished:
            print(f"{o.video}: already finished ({o.frames} frames) -> {o.folder}")
        elif o.ok:
            again = f", taken up again {o.retries} time(s) after a module was unavailable" if o.retries else ""
            print(f"{o.video}: {o.frames} frames in {o.seconds:.1f} s ({o.fps:.1f} frames/s){again} -> {o.folder}")
        else:
            kept = f"; results so far in {o.folder}" if o.frames else ""
            print(f"sipec analyze: error: {o.error}{kept}", file=sys.stderr)
    if not failed:
        return 0
    # 3: only bad input (a video that does not open or decode, another video's checkpoint): retrying cannot help
    return EXIT_BAD_INPUT if all(o.bad_input for o in failed) else 1


def run_up(args: argparse.Namespace) -> int:
    from orchestrator.local import LocalServicesError, up
    from sipec.cli import MODULES, CliError, module_clis
    from sipec.serving.repository import ModelRepository

    if not args.models.is_dir():
        raise CliError(f"--models: directory not found: {args.models}")
    servable = [c.__name__.split(".")[1] for c in module_clis() if hasattr(c, "register_serve")]
    if args.modules:
        modules = [m.strip() for m in args.modules.split(",") if m.strip()]
        bad = [m for m in modules if m not in servable]
        if bad:
            raise CliError(f"--modules: {', '.join(bad)} cannot be served here (modules: {', '.join(servable)})")
    else:
        models = set(ModelRepository(args.models).models())
        modules = [m for m in MODULES if m in servable and (m in models or m == "tracker")]
    try:
        started = up(args.models.resolve(), modules, args.state_dir, model_server=args.model_server,
                     timeout_s=args.timeout_s)
    except LocalServicesError as exc:
        raise CliError(str(exc)) from exc
    for s in started:
        print(f"{s.name:13s} localhost:{s.port:<6d} metrics :{s.metrics_port}  pid {s.pid}  log {s.log}")
    print(f"endpoints: {args.state_dir / 'endpoints.yaml'}  (sipec analyze ... --services local; sipec down)")
    return 0


def run_down(args: argparse.Namespace) -> int:
    from orchestrator.local import down

    names = down(args.state_dir)
    print(f"stopped: {', '.join(names)}" if names else f"nothing running from {args.state_dir}")
    return 0
