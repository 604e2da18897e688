"""`sipec models`: what a model repository holds."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list or inspect the models of a repository",
                       description="List the models and versions of a TF-Serving-layout model repository, or show "
                                   "one model's metadata (assets/sipec.json).")
    p.add_argument("--model-repo", required=True)
    p.add_argument("name", nargs="?", help="show this model's newest version metadata")
    p.add_argument("--version", type=int, default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sipec.cli import CliError
    from sipec.serving.errors import ServingError
    from sipec.serving.repository import ModelRepository

    if not Path(args.model_repo).is_dir():
        raise CliError(f"--model-repo: directory not found: {args.model_repo}")
    repo = ModelRepository(args.model_repo)
    try:
        if args.name:
            mv = repo.get(args.name, args.version)
            print(json.dumps({"name": mv.name, "version": mv.version, "path": str(mv.path),
                              "metadata": mv.metadata()}, indent=2))
            return 0
        names = repo.models()
    except ServingError as exc:
        raise CliError(str(exc)) from exc
    if not names:
        print(f"no models in {repo.root}")
    for name in names:
        mv = repo.get(name)
        meta = mv.metadata()
        print(f"{name}\tversions {','.join(map(str, repo.versions(name)))}\t"
              f"{meta.get('module', '?')}\t{meta.get('architecture', '')}")
    return 0
