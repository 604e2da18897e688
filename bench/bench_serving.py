"""Model in-process vs the same model through `sipec serve model-server` (TF Serving's protocol).

Network: MobileNetV2 (alpha 0.35, 128x128, random weights) with uint8 input rescaled in the graph,
exported into a fresh repository. Measures images per second at batch 1 and 16 through
`LoadedModel.predict` (what the local backend does) and through `TFServingBackend` against a
model-server process on localhost, interleaved in one run so that the ratio is fair.

    .venv/bin/python -m bench.bench_serving
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import median, table, time_calls

ROOT = Path(__file__).resolve().parent.parent


def _export(repo: Path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    image = keras.Input((128, 128, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(keras.ops.cast(image, "float32"))
    base = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.35, include_top=False, weights=None)
    feats = keras.layers.GlobalAveragePooling2D()(base(x))
    probs = keras.layers.Dense(4, activation="softmax")(feats)
    model = keras.Model(image, {"probs": probs})
    from sipec.serving.repository import ModelRepository

    ModelRepository(repo).export(model, "bench", {"module": "bench", "architecture": "mobilenetv2-0.35-128",
                                                  "input": {"height": 128, "width": 128, "channels": 3}})


def run(repeats: int = 30) -> str:
    from sipec.serving.backends import TFServingBackend
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.models import LoadedModel
    from sipec.serving.process import spawn_sipec
    from sipec.serving.repository import ModelRepository

    with tempfile.TemporaryDirectory(prefix="sipec-bench-") as tmp:
        repo = Path(tmp)
        _export(repo)
        local = LoadedModel(ModelRepository(repo).get("bench"))
        proc, port = spawn_sipec(["serve", "model-server", "--model-repo", str(repo), "--port", "0", "--poll-s", "0"])
        try:
            address = f"localhost:{port}"
            wait_for_serving(make_channel(address), timeout_s=60)
            remote = TFServingBackend(address, "bench")
            rows = []
            for batch in (1, 16):
                x = np.random.default_rng(batch).integers(0, 256, (batch, 128, 128, 3), dtype=np.uint8)
                t_local, t_remote = [], []
                for _ in range(3):  # interleave rounds so that drift hits both alike
                    t_local += time_calls(lambda x=x: local.predict({"image": x}), repeats // 3)
                    t_remote += time_calls(lambda x=x: remote.predict({"image": x}), repeats // 3)
                ips_local = batch / median(t_local)
                ips_remote = batch / median(t_remote)
                rows.append([batch, f"{ips_local:.0f}", f"{ips_remote:.0f}", f"{ips_remote / ips_local:.2f}",
                             f"{(median(t_remote) - median(t_local)) * 1000:.1f}"])
            remote.close()
        finally:
            proc.terminate()
            proc.wait(30)
    cmd = ".venv/bin/python -m bench.bench_serving"
    return ("### Model in-process vs through the model server\n\n"
            "MobileNetV2 (alpha 0.35) at 128x128, random weights, uint8 input; images per second "
            f"(median of {repeats} calls per cell, interleaved). Command: `{cmd}`\n\n"
            + table(["batch", "in-process img/s", "model-server img/s", "ratio", "added ms per call"], rows) + "\n")


if __name__ == "__main__":
    t0 = time.time()
    print(run())
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
