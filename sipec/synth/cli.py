"""`sipec synth`: generate a synthetic home-cage video with complete ground truth."""

from __future__ import annotations

import argparse
import logging
import sys

from sipec.synth.arena import TOP_FLOOR_WIDTH

log = logging.getLogger("sipec.synth")

DESCRIPTION = """\
Render a procedural home cage (rodents seen from above or from a corner) to DIR/video.mp4 and write
its ground truth: annotations.json (COCO masks, boxes, keypoints, track and identity ids),
keypoints.slp (SLEAP), keypoints_dlc.csv (DeepLabCut multi-animal), identities.csv, behaviour.csv,
positions_3d.csv, camera.json and, last, summary.json. The same arguments give the same data."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("synth", help="generate a synthetic home-cage video with complete ground truth",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder (created; must be empty unless --overwrite)")
    p.add_argument("--animals", type=int, default=4, metavar="N", help="number of animals, 1 to 8 (default 4)")
    p.add_argument("--frames", type=int, default=1000, metavar="F", help="number of frames (default 1000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--appearance-seed", type=int, default=None, metavar="A",
                   help="seed of the animals' looks only (default: --seed); the same A with another --seed gives "
                        "the same individuals in another recording, e.g. a held-out video for IdNet")
    p.add_argument("--size", default="640x480", metavar="WxH", help="frame size, even numbers (default 640x480)")
    p.add_argument("--camera", default="top", choices=("top", "perspective"),
                   help="top: straight down on a cage; perspective: a room seen from one corner (default top)")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate (default 30)")
    p.add_argument("--names", default=None, metavar="A,B,...",
                   help="identity names, comma separated (default animal_0, animal_1, ...)")
    p.add_argument("--no-objects", action="store_true", help="no shelter, feeder or platform in the cage")
    p.add_argument("--floor-width", type=float, default=TOP_FLOOR_WIDTH, metavar="M",
                   help="cage floor width in metres, top camera (default 0.6; the depth follows the aspect ratio): "
                        "wider shows smaller animals with more room between them")
    p.add_argument("--sociality", type=float, default=1.0, metavar="S",
                   help="how often the animals approach and groom each other, relative to the default 1 (0: never; "
                        "they still cross paths), 0 to 5")
    p.add_argument("--noise", type=float, default=3.0, metavar="STD", help="sensor noise, grey levels (default 3)")
    p.add_argument("--crf", type=int, default=17, help="H.264 quality, 0 (lossless) to 51 (default 17)")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sipec.cli import CliError
    from sipec.synth.config import parse_size

    try:
        width, height = parse_size(args.size)
    except ValueError as exc:
        raise CliError(f"--size: {exc}") from None
    if not 0 <= args.crf <= 51:
        raise CliError(f"--crf must be 0 to 51, not {args.crf}")
    names = tuple(n.strip() for n in args.names.split(",")) if args.names else None

    from sipec.synth.config import SynthConfig

    config = SynthConfig(animals=args.animals, frames=args.frames, seed=args.seed,
                         appearance_seed=args.appearance_seed, width=width, height=height,
                         camera=args.camera, fps=args.fps, objects=not args.no_objects, identity_names=names,
                         noise_std=args.noise, floor_width=args.floor_width,
                         sociality=args.sociality)
    try:
        config.validate()
    except ValueError as exc:
        flag = _flag_of(str(exc))
        raise CliError(f"{flag}: {exc}" if flag else str(exc)) from None
    from sipec.synth.pipeline import OutputExistsError, generate

    cli_args = {k: v for k, v in vars(args).items() if k != "func"}
    try:
        summary = generate(config, args.out, overwrite=args.overwrite, progress=not args.quiet and sys.stderr.isatty(),
                           crf=args.crf, args=cli_args)
    except OutputExistsError as exc:
        raise CliError(f"--out: {exc}") from None
    gen = summary["generation"]
    log.info("wrote %d frames to %s in %.1f s (%.1f frames/s)", summary["frames"], args.out, gen["seconds"],
             gen["frames_per_second"] or 0.0)
    return 0


def _flag_of(message: str) -> str:
    """The command-line flag a SynthConfig validation message is about."""
    for word, flag in (("identity names", "--names"), ("animals", "--animals"), ("frames", "--frames"),
                       ("camera", "--camera"), ("size", "--size"), ("fps", "--fps"),
                       ("appearance seed", "--appearance-seed"), ("seed", "--seed"), ("noise", "--noise"),
                       ("floor_width", "--floor-width"), ("sociality", "--sociality")):
        if message.startswith(word) or word in message.split(":")[0]:
            return flag
    return ""
