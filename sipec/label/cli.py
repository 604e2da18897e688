"""`sipec label`: label identities or behaviours of a `sipec analyze` result in the browser."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "label", help="label identities or behaviours in the browser (a local web page)",
        description="Serve a local web page to label the masks of a `sipec analyze` result: identities "
                    "(identities.csv for `sipec train idnet --data OUT`) or behaviour bouts per track "
                    "(behaviour.csv + annotations.json for `sipec train behavenet --data OUT`). Every label is "
                    "saved at once; run again with the same --out to go on.")
    p.add_argument("--video", required=True, help="the video that was analysed")
    p.add_argument("--results", required=True, help="its `sipec analyze` output folder (with results.parquet)")
    p.add_argument("--out", required=True, help="labels folder (created; resumed when it holds labels)")
    p.add_argument("--mode", choices=("identity", "behaviour"), default="identity", help="what to label")
    p.add_argument("--names", help="identity mode: identity names, comma-separated, in key order 1..9 "
                                   "(default: the identities in the results)")
    p.add_argument("--behaviours", help="behaviour mode: behaviour names, comma-separated, in key order 1..9 "
                                        "(default: the behaviours in the results)")
    p.add_argument("--count", type=int, default=100, help="identity mode: number of masks to label (default 100)")
    p.add_argument("--sample", choices=("regular", "random"), default="regular",
                   help="identity mode: frames at regular intervals or at random (default regular)")
    p.add_argument("--seed", type=int, default=0, help="seed of --sample random (default 0)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.set_defaults(func=run)


def _names(text: str | None, flag: str) -> list[str] | None:
    if text is None:
        return None
    from sipec.cli import CliError

    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise CliError(f"{flag}: no names given")
    if len(set(names)) != len(names):
        raise CliError(f"{flag}: names must be distinct ({text})")
    return names


def build_app(args: argparse.Namespace):
    """Check the arguments and open the session; CliError naming the file or flag when something is wrong."""
    from sipec.cli import CliError
    from sipec.label.results import RESULTS_FILE, Results
    from sipec.label.server import LabelApp, page
    from sipec.video import VideoError, probe

    try:
        page()
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from exc
    video, results_path, out = Path(args.video), Path(args.results), Path(args.out)
    if not video.is_file():
        raise CliError(f"--video: {video}: no such file")
    try:
        info = probe(video)
    except VideoError as exc:
        raise CliError(f"--video: {exc}") from exc
    if not results_path.exists():
        raise CliError(f"--results: {results_path}: no such file or folder")
    if results_path.is_dir() and not (results_path / RESULTS_FILE).is_file():
        raise CliError(f"--results: {results_path / RESULTS_FILE}: no such file (is {results_path} the output "
                       "folder of a finished `sipec analyze` run of this video?)")
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out}: exists and is not a folder")
    try:
        results = Results(results_path)
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(f"--results: {exc}") from exc
    if not len(results):
        raise CliError(f"--results: {results.path}: holds no masks")
    shape = results.mask_shape()
    if shape is not None and shape != (info.height, info.width):
        raise CliError(f"--results: {results.path}: masks are {shape[1]}x{shape[0]} but {video} is "
                       f"{info.width}x{info.height}; are they of the same video?")
    names = _names(args.names, "--names")
    behaviours = _names(args.behaviours, "--behaviours")
    if args.mode == "identity":
        if names is None:
            names = sorted({i.identity for rows in results.by_frame.values() for i in rows if i.identity})
            if not names:
                raise CliError("--names: needed (the results name no identities), e.g. --names alice,bob,carol")
        if args.count < 1:
            raise CliError(f"--count must be at least 1, not {args.count}")
        if args.seed < 0:
            raise CliError(f"--seed must be >= 0, not {args.seed}")
    else:
        if behaviours is None:
            behaviours = list(results.behaviour_names)
            if not behaviours:
                raise CliError("--behaviours: needed (the results have no behaviours), "
                               "e.g. --behaviours none,walking,rearing,grooming")
        for frame, rows in results.by_frame.items():
            tracks = [i.track_id for i in rows]
            if len(set(tracks)) != len(tracks):
                raise CliError(f"--results: {results.path}: frame {frame} has several masks of track "
                               f"{tracks[0]}; behaviour labels need tracks (run `sipec analyze` with the tracker)")
    if not 0 <= args.port <= 65535:
        raise CliError(f"--port must be 0 to 65535, not {args.port}")
    num_frames = info.frames or (max(results.frames) + 1)
    try:
        return LabelApp(video, results, out, args.mode, num_frames=num_frames, size=(info.width, info.height),
                        names=names, behaviours=behaviours, count=args.count, sample=args.sample, seed=args.seed)
    except (ValueError, OSError) as exc:
        raise CliError(f"--out: {exc}") from exc


def run(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.label.server import make_server

    app = build_app(args)
    try:
        server = make_server(app, args.host, args.port)
    except OSError as exc:
        raise CliError(f"--port: cannot listen on {args.host}:{args.port} ({exc})") from exc
    host, port = server.server_address[:2]
    stop = threading.Event()

    def on_term(signum, frame) -> None:  # SIGTERM: stop like Ctrl-C (every label is already on disk)
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, on_term)
    print(f"sipec label: {args.mode} labelling of {Path(args.video).name} on http://{host}:{port}/ "
          f"(labels saved in {args.out}; Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
        app.close()
    print(f"sipec label: stopped; labels are in {args.out}", file=sys.stderr, flush=True)
    return 0
