"""PoseNet crops per second: model + peak decoding in-process, the servicer in-process (`create_servicer`),
and `sipec serve posenet` over gRPC on localhost.

Network: the CPU configuration that `sipec train posenet` uses by default (small residual backbone, width 32,
128x128 crops, 2 deconvolutions, 4 heatmaps), random weights (speed does not depend on them), exported into a
fresh repository. Crops are raw RGB 128x128; batch 1 and 16.

    .venv/bin/python -m bench.bench_posenet
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import machine, median, table, time_calls

NAMES = ["snout", "leftear", "rightear", "tailbase"]
SIZE = 128
ROOT = Path(__file__).resolve().parent.parent


def _export(repo: Path) -> None:
    import keras

    from services.posenet.model import build_posenet, export_posenet

    keras.utils.set_random_seed(0)
    export_posenet(build_posenet(len(NAMES), SIZE, "small", small_width=32), repo, "posenet",
                   {"module": "posenet", "architecture": "simple-baselines/small",
                    "input": {"height": SIZE, "width": SIZE, "channels": 3}, "keypoint_names": NAMES})


def _request(batch: int):
    from sipec.api.convert import image_to_proto
    from sipec.v1 import posenet_pb2

    rng = np.random.default_rng(batch)
    req = posenet_pb2.PoseRequest()
    for i in range(batch):
        c = req.crops.add(crop=image_to_proto(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)), key=str(i))
        c.origin.x, c.origin.y = 10.0, 20.0
    return req


def run(repeats: int = 30) -> str:
    import grpc

    from services.posenet.predict import estimate_crops
    from services.posenet.service import create_servicer
    from sipec.serving.backends import LocalBackend
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.v1 import posenet_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="sipec-bench-posenet-") as tmp:
        repo = Path(tmp)
        _export(repo)
        backend = LocalBackend(repo, "posenet")
        servicer = create_servicer(repo)
        proc = subprocess.Popen([sys.executable, "-m", "sipec", "serve", "posenet", "--model-repo", str(repo),
                                 "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            assert proc.stdout is not None
            ready = re.compile(r"posenet: serving on port (\d+)")
            port = next((m.group(1) for line in proc.stdout if (m := ready.search(line))), None)
            if port is None:
                raise RuntimeError("sipec serve posenet did not start")
            address = f"localhost:{port}"
            wait_for_serving(make_channel(address), timeout_s=60)
            channel = grpc.insecure_channel(address)
            stub = posenet_pb2_grpc.PoseNetStub(channel)
            rows = []
            for batch in (1, 16):
                req = _request(batch)
                crops = np.random.default_rng(batch).integers(0, 256, (batch, SIZE, SIZE, 3), dtype=np.uint8)
                t_model, t_svc, t_grpc = [], [], []
                for _ in range(3):  # interleaved rounds: drift from other processes hits all three alike
                    t_model += time_calls(lambda c=crops: estimate_crops(backend, c), repeats // 3)
                    t_svc += time_calls(lambda r=req: servicer.EstimatePose(r, None), repeats // 3)
                    t_grpc += time_calls(lambda r=req: stub.EstimatePose(r, timeout=60), repeats // 3)
                rows.append([batch] + [f"{batch / median(t):.0f}" for t in (t_model, t_svc, t_grpc)]
                            + [f"{median(t_grpc) * 1000:.1f}"])
            channel.close()
        finally:
            proc.terminate()
            proc.wait(30)
            servicer.close()
            backend.close()
    cmd = ".venv/bin/python -m bench.bench_posenet"
    return ("### PoseNet: crops per second\n\n"
            f"Small residual backbone (width 32) + 2 deconvolutions, {SIZE}x{SIZE} crops, 4 keypoints, random "
            f"weights; median of {repeats} calls per cell, interleaved. Machine: {machine()}. Command: `{cmd}`\n\n"
            + table(["batch", "model + peaks in-process crops/s", "servicer in-process crops/s",
                     "`sipec serve posenet` gRPC crops/s", "gRPC ms per call"], rows) + "\n")


if __name__ == "__main__":
    t0 = time.time()
    print(run())
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
