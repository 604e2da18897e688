"""`sipec ...`: the command line.

Each subcommand lives in the module that owns it and registers itself through a
``register(subparsers)`` function; heavy imports (TensorFlow) happen only when a command runs,
so `sipec --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path of each subcommand's `register(subparsers)`, in the order `sipec --help` lists them
COMMANDS: tuple[str, ...] = (
    "sipec.synth.cli",
    "sipec.train_cli",
    "orchestrator.cli",
    "sipec.serving.cli",
    "sipec.models_cli",
    "sipec.deploy",
    "sipec.label.cli",
)

# `sipec evaluate` commands that are not one module's: module path of each `register_evaluate(subparsers)`
# (`sipec evaluate analysis`, a whole `sipec analyze` result against synth truth). This file is the composition
# root: it names the other layers by module path, so that nothing in sipec/ imports them.
EVALUATE_EXTRAS: tuple[str, ...] = ("orchestrator.score",)

# The modules. Each one that exists as services/<name>/cli.py adds itself to `sipec train`,
# `sipec evaluate` and `sipec serve` through its optional functions register_train(sub),
# register_evaluate(sub) and register_serve(sub); a module not built yet simply has no subcommand.
MODULES: tuple[str, ...] = ("segnet", "idnet", "posenet", "behavenet", "tracker")


def module_clis() -> list:
    """The `services.<module>.cli` modules that exist, in MODULES order."""
    import importlib.util

    out = []
    for name in MODULES:
        path = f"services.{name}.cli"
        if importlib.util.find_spec(f"services.{name}") is not None and importlib.util.find_spec(path) is not None:
            out.append(importlib.import_module(path))
    return out


class CliError(Exception):
    """A problem the user can fix; printed as one line without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipec",
        description="SIPEC: segmentation, identification, pose and behaviour of animals from video.",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="log lines as text or as one JSON object per line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for path in COMMANDS:
        importlib.import_module(path).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sipec.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print(f"sipec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"sipec {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
