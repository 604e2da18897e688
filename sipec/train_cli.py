"""`sipec train <module>` and `sipec evaluate <module>`: filled by the modules that exist."""

from __future__ import annotations

import argparse
import importlib


def register(sub: argparse._SubParsersAction) -> None:
    from sipec.cli import EVALUATE_EXTRAS, module_clis

    clis = [c for c in module_clis() if hasattr(c, "register_train") or hasattr(c, "register_evaluate")]
    if not clis:
        return  # no module built yet: no `train` / `evaluate` commands to offer
    train = sub.add_parser("train", help="train a network and export it into a model repository",
                           description="Train one module's network and export it as a new version in a "
                                       "TF-Serving-layout model repository.")
    train_sub = train.add_subparsers(dest="module", metavar="MODULE")
    train_sub.required = True
    evaluate = sub.add_parser("evaluate", help="measure a trained network against ground truth",
                              description="Evaluate one module's model against labelled data; prints a table "
                                          "and writes JSON.")
    eval_sub = evaluate.add_subparsers(dest="module", metavar="MODULE")
    eval_sub.required = True
    for cli in clis:
        if hasattr(cli, "register_train"):
            cli.register_train(train_sub)
        if hasattr(cli, "register_evaluate"):
            cli.register_evaluate(eval_sub)
    for path in EVALUATE_EXTRAS:
        importlib.import_module(path).register_evaluate(eval_sub)
