"""`make demo`: what the project does today, end to end on this machine, in a few minutes.

1. `sipec synth`: a synthetic home cage (4 animals, 640x480) with ground truth for every module.
2. Every module whose `sipec train` exists is trained briefly on it, exported into a model repository,
   served as its own gRPC service, called over gRPC, and measured against the ground truth.
3. Where no module is built yet, the serving path is still shown for real: a small network is exported
   into the repository, served by `sipec serve model-server` (TF Serving's protocol) and called with
   tensorflow-serving-api's own client, and the answer is compared with the in-process model.

Outputs go to `demo-out/` (override with SIPEC_DEMO_OUT).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _sipec(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "sipec", *args]
    print("  $ sipec " + " ".join(args), flush=True)
    return subprocess.run(cmd, check=True, cwd=ROOT, text=True, capture_output=True)


def _start(*args: str, ready: str = r"on port (\d+)") -> tuple[subprocess.Popen, int]:
    print("  $ sipec " + " ".join(args) + " &", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "sipec", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(ready, line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError(f"sipec {' '.join(args)} exited before serving")


def step_synth(out: Path) -> Path:
    print("\n[1] synthetic home cage with ground truth")
    synth = out / "synth"
    t0 = time.time()
    _sipec("synth", "--out", str(synth), "--animals", "4", "--frames", "300", "--seed", "1", "--overwrite", "--quiet")
    summary = json.loads((synth / "summary.json").read_text())
    print(f"  {summary['frames']} frames {summary['size']} in {time.time() - t0:.1f} s: "
          f"{len(summary['identities'])} animals, behaviours "
          + ", ".join(f"{k} {v}" for k, v in summary["behaviour_frame_counts"].items()))
    print(f"  files: {', '.join(sorted(summary['files']))}")
    return synth


def step_serving(out: Path, synth: Path) -> None:
    print("\n[2] model repository -> `sipec serve model-server` -> TF Serving's gRPC client")
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from sipec.geometry import crop_around
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.models import LoadedModel
    from sipec.serving.repository import ModelRepository
    from sipec.synth.reader import SynthDataset

    repo = out / "models"
    name = "serving-check"
    ds = SynthDataset(synth)
    if not ModelRepository(repo).versions(name):
        import keras

        keras.utils.set_random_seed(0)
        image = keras.Input((64, 64, 3), dtype="uint8", name="image")
        x = keras.layers.Rescaling(1 / 255.0)(keras.ops.cast(image, "float32"))
        x = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, include_top=False, weights=None)(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        probs = keras.layers.Dense(len(ds.identity_names), activation="softmax")(x)
        model = keras.Model(image, {"probs": probs})
        ModelRepository(repo).export(model, name, {
            "module": "serving-check", "architecture": "mobilenetv2-0.35-64 (untrained; checks the serving path only)",
            "class_names": ds.identity_names, "input": {"height": 64, "width": 64, "channels": 3}})
    mv = ModelRepository(repo).get(name)
    print(f"  exported {mv.path.relative_to(out)} (untrained network: this step checks transport, not accuracy)")
    frame = ds.frame(100)
    crops = np.stack([crop_around(frame, inst.com, 64) for inst in ds.instances(100)])
    proc, port = _start("serve", "model-server", "--model-repo", str(repo), "--port", "0")
    try:
        wait_for_serving(make_channel(f"localhost:{port}"), timeout_s=60)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"localhost:{port}"))
        req = predict_pb2.PredictRequest()
        req.model_spec.name = name
        req.inputs["image"].CopyFrom(tf.make_tensor_proto(crops))
        stub.Predict(req, timeout=30)  # the first call builds the graph's kernels; time the second
        t0 = time.perf_counter()
        resp = stub.Predict(req, timeout=30)
        ms = (time.perf_counter() - t0) * 1000
        served = tf.make_ndarray(resp.outputs["probs"])
        local = LoadedModel(mv).predict({"image": crops})["probs"]
        print(f"  Predict on {len(crops)} animal crops of frame 100 over gRPC: {ms:.1f} ms, version "
              f"{resp.model_spec.version.value}; max |served - in-process| = {np.abs(served - local).max():.2e}")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> int:
    out = Path(os.environ.get("SIPEC_DEMO_OUT", ROOT / "demo-out"))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    synth = step_synth(out)
    step_serving(out, synth)
    print(f"\nDone in {time.time() - t0:.0f} s. Outputs under {out}:")
    print(f"  {synth}/video.mp4 and its ground truth; model repository {out / 'models'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
