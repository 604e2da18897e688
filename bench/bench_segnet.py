"""SegNet frames per second at 640x480: in-process (letterbox + exported graph + mask pasting) and through
`sipec serve segnet` (unary Segment, and SegmentStream with batching).

Run: `.venv/bin/python -m bench.bench_segnet [MODEL_REPO]`. With a repository (holding a `segnet` model) its
model is timed; without, a freshly exported untrained CPU-configuration model (320x256 input) is: the speed
of the graph does not depend on its weights, only on the configuration and on how many detections pass NMS.
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

ROOT = Path(__file__).resolve().parents[1]


def _frames(n: int) -> np.ndarray:
    from sipec.synth.reader import SynthDataset

    with tempfile.TemporaryDirectory(prefix="sipec-bench-synth-") as tmp:
        subprocess.run([sys.executable, "-m", "sipec", "synth", "--out", tmp, "--animals", "4", "--frames", str(n),
                        "--seed", "3", "--size", "640x480"], check=True, capture_output=True, cwd=ROOT)
        ds = SynthDataset(Path(tmp))
        return np.stack([img for _, img in ds.frames(0, n)])


def _export_untrained(repo: Path) -> None:
    import keras

    from services.segnet.config import preset
    from services.segnet.model import build_model
    from services.segnet.train import export_model

    keras.utils.set_random_seed(0)
    export_model(build_model(preset("mobilenetv2-0.35", 256, 320)), repo, "segnet", {"note": "untrained"})


def _serve(repo: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "sipec", "serve", "segnet", "--model-repo", str(repo),
                             "--port", "0", "--max-batch", "8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(r"segnet: serving on port (\d+)", line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError("sipec serve segnet did not start")


def run(model_repo: str | None = None, n_frames: int = 16) -> str:
    import grpc

    from services.segnet.data import letterbox
    from services.segnet.service import SegNetServicer
    from sipec.api.convert import image_to_proto
    from sipec.serving.backends import LocalBackend
    from sipec.v1 import segnet_pb2, segnet_pb2_grpc

    frames = _frames(n_frames)
    with tempfile.TemporaryDirectory(prefix="sipec-bench-segnet-") as tmp:
        repo = Path(model_repo) if model_repo else Path(tmp)
        if not model_repo:
            _export_untrained(repo)
        backend = LocalBackend(repo, "segnet")
        deadline = time.time() + 120
        while not backend.ready() and time.time() < deadline:
            time.sleep(0.2)
        info = backend.metadata().info
        servicer = SegNetServicer(backend, max_batch=8)
        reqs = [segnet_pb2.SegmentRequest(image=image_to_proto(f)) for f in frames]
        rows = []
        size = (int(info["input"]["height"]), int(info["input"]["width"]))
        boxed = np.stack([letterbox(f, *size)[0] for f in frames])
        for batch in (1, 8):
            tm = time_calls(lambda b=batch: [backend.predict({"image": boxed[i:i + b]})
                                             for i in range(0, n_frames, b)], repeats=3, warmup=1)
            rows.append([f"model only (exported graph, letterboxed input), batch {batch}",
                         f"{n_frames / median(tm):.1f}"])
        t1 = time_calls(lambda: [servicer._answer_batch([r]) for r in reqs], repeats=3, warmup=1)
        rows.append(["in-process, 1 frame per backend call", f"{n_frames / median(t1):.1f}"])
        t8 = time_calls(lambda: [servicer._answer_batch(reqs[i:i + 8]) for i in range(0, n_frames, 8)],
                        repeats=3, warmup=1)
        rows.append(["in-process, 8 frames per backend call", f"{n_frames / median(t8):.1f}"])
        backend.close()
        proc, port = _serve(repo)
        try:
            channel = grpc.insecure_channel(f"localhost:{port}")
            stub = segnet_pb2_grpc.SegNetStub(channel)
            grpc.channel_ready_future(channel).result(timeout=60)
            tu = time_calls(lambda: [stub.Segment(r, timeout=120) for r in reqs], repeats=3, warmup=1)
            rows.append(["service, unary Segment (raw RGB)", f"{n_frames / median(tu):.1f}"])
            ts = time_calls(lambda: list(stub.SegmentStream(iter(reqs), timeout=300)), repeats=3, warmup=1)
            rows.append(["service, SegmentStream (batches up to 8)", f"{n_frames / median(ts):.1f}"])
            channel.close()
        finally:
            proc.terminate()
            proc.wait(30)
    what = f"trained model {model_repo}" if model_repo else "untrained model, default CPU configuration"
    return "\n".join([
        "### SegNet: frames per second at 640x480",
        "",
        f"`.venv/bin/python -m bench.bench_segnet {model_repo or ''}`".replace(" `", "`"),
        "",
        f"Machine: {machine()}. Model: {info.get('architecture')} at {info['input']['width']}x"
        f"{info['input']['height']} input "
        f"({what}); {n_frames} `sipec synth` frames (4 animals), median of 3 rounds.",
        "",
        table(["path", "frames/s"], rows),
        "",
    ])


if __name__ == "__main__":
    print(run(sys.argv[1] if len(sys.argv) > 1 else None))
