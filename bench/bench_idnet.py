"""IdNet crops per second: the exported model in-process vs `sipec serve idnet` over gRPC (Identify).

Networks: the CPU configuration (densenet-small, S=64), frame network (T=0) and recurrent network (T=3, 7 crops
per identified animal), random weights (speed does not depend on them), exported into a fresh repository.
"In-process" = LocalBackend.predict on crops already masked; "service" = Identify with raw 96x96 crops and masks
(decoding, masking with dilation, gRPC on localhost included), batches of 16 sequences, interleaved in one run.

    .venv/bin/python -m bench.bench_idnet
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import machine, median, table, time_calls

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16
CROP_PX = 96


def _export(repo: Path) -> None:
    import keras

    from services.idnet.export import export_idnet
    from services.idnet.masking import MaskSettings
    from services.idnet.model import NetworkConfig, build_frame_network, build_recurrent_head, build_recurrent_network

    keras.utils.set_random_seed(0)
    names = [f"animal_{i}" for i in range(4)]
    settings = MaskSettings(64, CROP_PX)
    cfg = NetworkConfig("densenet-small", 64, 3, 4, 64)
    frame, features = build_frame_network(cfg)
    export_idnet(frame, repo, "idnet-frame", NetworkConfig("densenet-small", 64, 0, 4, 64), names, settings)
    head = build_recurrent_head(cfg, int(features.output.shape[-1]))
    export_idnet(build_recurrent_network(cfg, features, head), repo, "idnet", cfg, names, settings)


def run() -> str:
    import grpc

    from services.idnet.masking import MaskSettings, prepare_sequence
    from sipec.api.convert import image_to_proto, mask_to_proto
    from sipec.serving.backends import LocalBackend
    from sipec.v1 import idnet_pb2, idnet_pb2_grpc

    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        _export(repo)
        for name, t in (("idnet-frame", 0), ("idnet", 3)):
            n = 2 * t + 1
            crops = rng.integers(0, 256, (BATCH, n, CROP_PX, CROP_PX, 3), dtype=np.uint8)
            masks = np.zeros((BATCH, n, CROP_PX, CROP_PX), bool)
            masks[:, :, 30:66, 20:76] = True
            settings = MaskSettings(64, CROP_PX)
            prepared = np.stack([prepare_sequence(list(c), list(m), settings) for c, m in zip(crops, masks,
                                                                                           strict=True)])
            backend = LocalBackend(repo, name)
            local = time_calls(lambda b=backend, x=prepared: b.predict({"crops": x}), repeats=10)
            backend.close()
            proc = subprocess.Popen([sys.executable, "-m", "sipec", "serve", "idnet", "--model-repo", str(repo),
                                     "--model-name", name, "--port", "0"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, cwd=ROOT)
            try:
                port = None
                assert proc.stdout is not None
                for line in proc.stdout:
                    m = re.search(r"idnet: serving on port (\d+)", line)
                    if m:
                        port = m.group(1)
                        break
                if port is None:
                    raise RuntimeError("sipec serve idnet did not start")
                channel = grpc.insecure_channel(f"localhost:{port}")
                stub = idnet_pb2_grpc.IdNetStub(channel)
                req = idnet_pb2.IdentifyRequest(sequences=[idnet_pb2.CropSequence(
                    crops=[image_to_proto(x) for x in c], masks=[mask_to_proto(x) for x in mk])
                    for c, mk in zip(crops, masks, strict=True)])
                served = time_calls(lambda s=stub, r=req: s.Identify(r, timeout=120), repeats=10)
                channel.close()
            finally:
                proc.terminate()
                proc.wait(30)
            lt, st = median(local), median(served)
            rows.append([name, t, n, f"{BATCH / lt:.0f}", f"{BATCH * n / lt:.0f}", f"{BATCH / st:.0f}",
                         f"{BATCH * n / st:.0f}", f"{st / lt:.2f}"])
    return "\n".join([
        "### IdNet: crops per second, in-process vs service",
        "",
        "Command: `.venv/bin/python -m bench.bench_idnet` (densenet-small, S=64, random weights, batches of "
        f"{BATCH} sequences of {CROP_PX}x{CROP_PX} crops with masks; median of 10 calls).",
        f"Machine: {machine()}.",
        "",
        table(["model", "T", "crops/sequence", "animals/s in-process", "crops/s in-process", "animals/s service",
               "crops/s service", "service/in-process time"], rows),
        "",
    ])


if __name__ == "__main__":
    print(run())
