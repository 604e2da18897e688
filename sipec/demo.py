"""`make demo`: the whole product on this machine, from nothing to behaviour data, in about a quarter hour.

1. `sipec synth`: two recordings of the same three animals in a home cage (a training video and a held-out
   test video; `--appearance-seed` keeps the individuals, `--seed` changes everything else), with ground
   truth for every module.
2. `sipec train` of each network on the training video, briefly (CPU sizes): SegNet (Mask R-CNN), IdNet
   (DenseNet + bidirectional GRU), PoseNet (heatmaps), BehaveNet (Xception features + temporal conv net).
   Each is exported as a SavedModel into one TF-Serving-layout model repository.
3. `sipec up`: every module (and the tracker) as its own gRPC service on localhost.
4. `sipec analyze` of the held-out video through those services: results table, pose files, annotated
   video, ethogram, bout statistics, density maps.
5. `sipec down`, then `sipec evaluate analysis`: each module measured against the held-out ground truth.
6. The same model repository served by `sipec serve model-server` and called with tensorflow-serving-api's
   own client: what a TF Serving deployment of these models answers.

`python -m sipec.demo [--out DIR] [--quick]`; `--quick` (the test suite's run) makes everything smaller.
Outputs go to `demo-out/` (or SIPEC_DEMO_OUT / --out).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODULES = ("segnet", "tracker", "idnet", "posenet", "behavenet")


@dataclass(frozen=True)
class Profile:
    animals: int
    size: str
    train_frames: int
    test_frames: int
    segnet: tuple[str, ...]
    idnet: tuple[str, ...]
    posenet: tuple[str, ...]
    behavenet: tuple[str, ...]
    max_frames_in_flight: int = 64


FULL = Profile(
    animals=3, size="320x240", train_frames=2400, test_frames=600,
    segnet=("--step", "4", "--epochs", "40", "--max-minutes", "6"),
    idnet=("--max-frames", "800", "--t", "3", "--input-size", "48", "--crop-px", "80", "--epochs", "6",
           "--recurrent-epochs", "4", "--lr", "1e-3", "--recurrent-lr", "1e-3", "--gru-units", "16"),
    posenet=("--step", "8", "--epochs", "8", "--input-size", "64", "--width", "16"),
    behavenet=("--epochs", "16", "--temporal-epochs", "12", "--input-size", "48", "--crop-px", "80",
               "--pair-crop-px", "128", "--window-n", "4", "--frame-step", "3"),
)
QUICK = Profile(
    animals=2, size="320x240", train_frames=160, test_frames=40,
    segnet=("--epochs", "6", "--limit", "48", "--batch-size", "2"),
    idnet=("--t", "1", "--input-size", "32", "--crop-px", "64", "--epochs", "1", "--recurrent-epochs", "1",
           "--gru-units", "8"),
    posenet=("--epochs", "1", "--input-size", "64", "--width", "8", "--batch-size", "2"),
    behavenet=("--epochs", "1", "--temporal-epochs", "1", "--input-size", "32", "--crop-px", "64",
               "--pair-crop-px", "96", "--window-n", "2", "--frame-step", "4"),
    max_frames_in_flight=6,   # fewer than the video's frames: the bounded window must keep moving
)


_SHOW = re.compile(r"^(segnet|idnet|posenet|behavenet|tracker|sipec)\b|^epoch \d|^\s*(exported|wrote|held-out)|"
                   r"\d+ frames in [\d.]+ s \([\d.]+ frames/s\)")


def _sipec(*args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    """Run `sipec ARGS`, showing its progress lines as they come (all of its output when it fails)."""
    print("  $ sipec " + " ".join(args), flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "sipec", *args], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"})
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if not quiet and _SHOW.search(line.strip()) and " INFO " not in line:
            print("    " + line.rstrip(), flush=True)
    rc = proc.wait()
    out = "".join(lines)
    if rc != 0:
        print(out[-4000:], file=sys.stderr)
        raise SystemExit(f"demo: `sipec {' '.join(args)}` failed with exit code {rc}")
    return subprocess.CompletedProcess(proc.args, rc, out, "")


def step_synth(out: Path, p: Profile) -> tuple[Path, Path]:
    print("\n[1] two recordings of the same animals, with ground truth")
    paths = []
    for name, frames, seed in (("train", p.train_frames, 1), ("test", p.test_frames, 2)):
        path = out / "synth" / name
        _sipec("synth", "--out", str(path), "--animals", str(p.animals), "--frames", str(frames), "--seed", str(seed),
               "--appearance-seed", "7", "--size", p.size, "--overwrite", "--quiet", quiet=True)
        summary = json.loads((path / "summary.json").read_text())
        print(f"    {name}: {summary['frames']} frames {summary['size'][0]}x{summary['size'][1]}, "
              f"{len(summary['identities'])} animals; behaviours "
              + ", ".join(f"{k} {v}" for k, v in summary["behaviour_frame_counts"].items()))
        paths.append(path)
    return paths[0], paths[1]


def step_train(out: Path, train: Path, p: Profile) -> Path:
    print("\n[2] train every network on the training video and export it into one model repository")
    repo = out / "models"
    times = {}
    for module, args in (("segnet", ("--synth", str(train), *p.segnet)),
                         ("idnet", ("--data", str(train), *p.idnet)),
                         ("posenet", ("--data", str(train), *p.posenet)),
                         ("behavenet", ("--data", str(train), *p.behavenet))):
        t0 = time.time()
        _sipec("train", module, *args, "--out", str(repo), "--seed", "0")
        times[module] = time.time() - t0
    print("    training time: " + ", ".join(f"{m} {s:.0f} s" for m, s in times.items()))
    return repo


def step_analyze(out: Path, repo: Path, test: Path, p: Profile) -> Path:
    print("\n[3] every module as its own gRPC service; [4] analyse the held-out video through them")
    state = out / "state"
    analysis = out / "analysis"
    config = out / "pipeline.yaml"
    config.write_text(f"modules: [{', '.join(MODULES)}]\nmax_frames_in_flight: {p.max_frames_in_flight}\n")
    _sipec("up", "--models", str(repo), "--modules", ",".join(MODULES), "--state-dir", str(state))
    try:
        _sipec("analyze", str(test / "video.mp4"), "--services", "local", "--state-dir", str(state),
               "--out", str(analysis), "--config", str(config), "--animals", str(p.animals), "--quiet")
    finally:
        _sipec("down", "--state-dir", str(state))
    return analysis / "video"


def step_score(out: Path, folder: Path, test: Path) -> dict:
    print("\n[5] each module against the held-out ground truth")
    _sipec("evaluate", "analysis", str(folder), "--synth", str(test), "--json", str(out / "scores.json"))
    return json.loads((out / "scores.json").read_text())


def step_tfserving(repo: Path, test: Path) -> None:
    print("\n[6] the same repository through TF Serving's protocol (`sipec serve model-server`)")
    import cv2
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from sipec.geometry import crop_around
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.models import LoadedModel
    from sipec.serving.process import spawn_sipec
    from sipec.serving.repository import ModelRepository
    from sipec.synth.reader import SynthDataset

    mv = ModelRepository(repo).get("posenet")
    meta = mv.metadata()
    side = int(round(meta.get("crop", {}).get("side_px") or meta["input"]["height"]))   # crop side in frame pixels
    with SynthDataset(test) as ds:
        frame = ds.frame(5)
        crops = np.stack([crop_around(frame, inst.com, side) for inst in ds.instances(5)])
    print(f"  $ sipec serve model-server --model-repo {repo} --port 0 &")
    proc, port = spawn_sipec(["serve", "model-server", "--model-repo", str(repo), "--port", "0"])
    try:
        wait_for_serving(make_channel(f"localhost:{port}"), timeout_s=120)
        stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"localhost:{port}"))
        loaded = LoadedModel(mv)
        (input_name, spec), = loaded.signature(None)[1].inputs.items()
        size = int(spec.shape[1])   # the network's input side: the service resizes crops to it, we do it here
        crops = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in crops])
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "posenet"
        req.inputs[input_name].CopyFrom(tf.make_tensor_proto(crops))
        stub.Predict(req, timeout=60)
        t0 = time.perf_counter()
        resp = stub.Predict(req, timeout=60)
        ms = (time.perf_counter() - t0) * 1000
        local = loaded.predict({input_name: crops})
        diff = max(float(np.abs(tf.make_ndarray(resp.outputs[k]) - local[k]).max()) for k in resp.outputs)
        print(f"    PredictionService.Predict(posenet, {len(crops)} crops) in {ms:.1f} ms, version "
              f"{resp.model_spec.version.value}, outputs {sorted(resp.outputs)}; max |served - in-process| {diff:.1e}")
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sipec.demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("SIPEC_DEMO_OUT", ROOT / "demo-out")))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the test suite's run; scores mean little)")
    ap.add_argument("--skip-tfserving", action="store_true", help="leave out step 6")
    args = ap.parse_args(argv)
    profile = QUICK if args.quick else FULL
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("KERAS_HOME", str(out / ".keras"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # step 6 imports TensorFlow in this process
    t0 = time.time()
    train, test = step_synth(out, profile)
    repo = step_train(out, train, profile)
    folder = step_analyze(out, repo, test, profile)
    step_score(out, folder, test)
    if not args.skip_tfserving:
        step_tfserving(repo, test)
    print(f"\nDone in {time.time() - t0:.0f} s. Outputs under {out}:")
    print("  synth/{train,test}: videos and ground truth; models/: the model repository")
    print(f"  analysis/video: {', '.join(sorted(p.name for p in folder.iterdir() if p.is_file()))}")
    print("  scores.json: each module against the held-out ground truth")
    return 0


if __name__ == "__main__":
    sys.exit(main())
