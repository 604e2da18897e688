"""`sipec train posenet`, `sipec evaluate posenet`, `sipec serve posenet` (TensorFlow imported lazily)."""

from __future__ import annotations

import argparse
from typing import Any


def register_train(sub: Any) -> None:
    from services.posenet import train

    p = sub.add_parser("posenet", help="train the pose network on DLC / SLEAP / COCO keypoints",
                       description="Train PoseNet (Simple Baselines heatmaps) and export it to a model repository.")
    train.add_arguments(p)
    p.set_defaults(func=lambda args: train.run_train(args))


def register_evaluate(sub: Any) -> None:
    from services.posenet import evaluate

    p = sub.add_parser("posenet", help="keypoint RMSE / PCK of a trained pose network",
                       description="RMSE (all, above p-cutoff), PCK and per-keypoint RMSE in original pixels.")
    evaluate.add_arguments(p)
    p.set_defaults(func=lambda args: evaluate.run_evaluate(args))


def register_serve(sub: Any) -> None:
    from sipec.serving.cli import add_server_arguments
    from sipec.serving.module import add_backend_arguments

    p = sub.add_parser("posenet", help="serve PoseNet over gRPC (sipec.v1.PoseNet)")
    add_server_arguments(p, 50053)
    add_backend_arguments(p, "posenet")
    p.add_argument("--max-batch", type=int, default=64, help="most crops per request (default 64)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from services.posenet.service import serve

    return serve(args)
