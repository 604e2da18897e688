"""BehaveNet: frames per second of ClassifyStream through the service, and the accuracy figure.

Speed (`run()`, what `make bench` calls): the CPU configuration BehaveNet trains with by default
(xception-small at 64x64, temporal window n=10) is exported into a fresh repository with random
weights (speed does not depend on the weights) and served by `sipec serve behavenet` in its own
process, with the local backend and with the tfserving backend through `sipec serve model-server`.
A client streams 4 subjects x 300 frames (128x128 raw crops, interleaved as a 4-animal video would
send them) and times the first request to the last answer. The same crops through the two models
in-process (batches of 64) give the ceiling.

    .venv/bin/python -m bench.bench_behavenet

Accuracy (`--accuracy`, about 15 minutes on 2 cores): `sipec synth` makes 4 training and 2 held-out
videos (640x480, 4 animals, 1500 frames), `sipec train behavenet` trains with its defaults and
`sipec evaluate behavenet` scores the held-out videos, frame-only next to temporal.

    .venv/bin/python -m bench.bench_behavenet --accuracy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import table

ROOT = Path(__file__).resolve().parent.parent
SUBJECTS = 4
FRAMES = 300
INPUT = 64
CROP = 128
N = 10


def _export(repo: Path) -> None:
    import keras

    from services.behavenet.crops import CropSettings
    from services.behavenet.model import TemporalConfig, feature_network, frame_classifier, temporal_network
    from services.behavenet.train import TrainedBehaveNet, TrainSettings, export_behavenet
    from services.behavenet.xception import BACKBONES

    keras.utils.set_random_seed(0)
    settings = TrainSettings(crops=CropSettings(input_size=INPUT, crop_px=CROP), temporal=TemporalConfig(n=N))
    feats = feature_network(INPUT, BACKBONES[settings.backbone])
    trained = TrainedBehaveNet(feats, frame_classifier(feats, 6), temporal_network(512, 6, settings.temporal),
                               ["none", "walking", "rearing", "grooming", "resting", "social_grooming"], settings,
                               {}, {"note": "random weights, speed benchmark"}, "bench", 0.0)
    export_behavenet(trained, repo, "behavenet")


def _start(args: list[str], pattern: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "sipec", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.search(pattern, line)
        if m:
            return proc, int(m.group(1))
    raise RuntimeError(f"{' '.join(args)} did not start")


def _requests(crops: np.ndarray) -> list:
    from sipec.api.convert import frame_ref_to_proto, image_to_proto
    from sipec.v1 import behavenet_pb2

    out = []
    for t in range(FRAMES):
        for s in range(SUBJECTS):
            out.append(behavenet_pb2.BehaviourFrame(frame=frame_ref_to_proto("bench", t, t / 30), subject=str(s),
                                                    crop=image_to_proto(crops[(t * SUBJECTS + s) % len(crops)])))
    return out


def _stream_seconds(address: str, requests: list) -> float:
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.v1 import behavenet_pb2_grpc

    channel = make_channel(address)
    wait_for_serving(channel, "sipec.v1.BehaveNet", timeout_s=120)
    stub = behavenet_pb2_grpc.BehaveNetStub(channel)
    list(stub.ClassifyStream(iter(requests[:SUBJECTS * 30]), timeout=300))   # warm-up
    t0 = time.perf_counter()
    answers = list(stub.ClassifyStream(iter(requests), timeout=600))
    seconds = time.perf_counter() - t0
    channel.close()
    if len(answers) != len(requests) or any(a.HasField("error") for a in answers):
        raise RuntimeError("the stream did not answer every crop without error")
    return seconds


def _in_process_seconds(repo: Path, crops: np.ndarray) -> float:
    from services.behavenet.crops import resize_crop
    from services.behavenet.windows import windows
    from sipec.serving.models import LoadedModel
    from sipec.serving.repository import ModelRepository

    r = ModelRepository(repo)
    feats_model, temporal = LoadedModel(r.get("behavenet-features")), LoadedModel(r.get("behavenet"))
    x = np.stack([resize_crop(crops[i % len(crops)], INPUT) for i in range(SUBJECTS * FRAMES)])
    feats_model.predict({"crop": x[:64]})
    t0 = time.perf_counter()
    f = np.concatenate([feats_model.predict({"crop": x[i:i + 64]})["features"] for i in range(0, len(x), 64)])
    w = windows(f, N).astype(np.float32)   # one sequence stands for the 4: same number of windows
    for i in range(0, len(w), 64):
        temporal.predict({"features": w[i:i + 64]})
    return time.perf_counter() - t0


def run() -> str:
    """Stream throughput through the service (local and tfserving backends) vs the models in-process."""
    crops = np.random.default_rng(0).integers(0, 256, (64, CROP, CROP, 3), dtype=np.uint8)
    requests = _requests(crops)
    total = len(requests)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sipec-bench-behavenet-") as tmp:
        repo = Path(tmp)
        _export(repo)
        base = _in_process_seconds(repo, crops)
        rows.append(["models in-process (batch 64)", f"{total / base:.0f}", f"{total / base / SUBJECTS:.0f}", "1.00"])
        proc, port = _start(["serve", "behavenet", "--model-repo", str(repo), "--port", "0"],
                            r"behavenet: serving on port (\d+)")
        try:
            sec = _stream_seconds(f"localhost:{port}", requests)
            rows.append(["ClassifyStream, local backend", f"{total / sec:.0f}", f"{total / sec / SUBJECTS:.0f}",
                         f"{base / sec:.2f}"])
        finally:
            proc.terminate()
            proc.wait(30)
        ms, ms_port = _start(["serve", "model-server", "--model-repo", str(repo), "--port", "0", "--poll-s", "0"],
                             r"on port (\d+)")
        try:
            proc, port = _start(["serve", "behavenet", "--backend", "tfserving", "--tfserving",
                                 f"localhost:{ms_port}", "--port", "0"], r"behavenet: serving on port (\d+)")
            try:
                sec = _stream_seconds(f"localhost:{port}", requests)
                rows.append(["ClassifyStream, tfserving backend (model-server)", f"{total / sec:.0f}",
                             f"{total / sec / SUBJECTS:.0f}", f"{base / sec:.2f}"])
            finally:
                proc.terminate()
                proc.wait(30)
        finally:
            ms.terminate()
            ms.wait(30)
    cmd = ".venv/bin/python -m bench.bench_behavenet"
    return ("### BehaveNet: frames per second of ClassifyStream\n\n"
            f"xception-small at {INPUT}x{INPUT} + temporal network n={N} (random weights), {SUBJECTS} subjects x "
            f"{FRAMES} frames of {CROP}x{CROP} raw crops in one stream, first request to last answer. "
            f"Command: `{cmd}`\n\n"
            + table(["path", "crops/s", f"video frames/s ({SUBJECTS} animals)", "vs in-process"], rows) + "\n")


def run_accuracy(work: Path) -> str:
    """synth -> train -> evaluate on held-out videos; returns the markdown block with the figures."""
    work.mkdir(parents=True, exist_ok=True)
    train = [work / f"train{s}" for s in (1, 2, 3, 4)]
    test = [work / f"test{s}" for s in (101, 102)]
    sipec = [sys.executable, "-m", "sipec"]
    for folder, seed in zip(train + test, (1, 2, 3, 4, 101, 102), strict=True):
        if not (folder / "summary.json").is_file():
            subprocess.run([*sipec, "synth", "--out", str(folder), "--animals", "4", "--frames", "1500", "--seed",
                            str(seed), "--quiet"], check=True, cwd=ROOT)
    repo = work / "repo"
    t0 = time.time()
    train_cmd = [*sipec, "train", "behavenet", "--data", *map(str, train), "--out", str(repo)]   # the defaults
    subprocess.run(train_cmd, check=True, cwd=ROOT)
    train_s = time.time() - t0
    report_path = work / "report.json"
    subprocess.run([*sipec, "evaluate", "behavenet", "--model-repo", str(repo), "--data", *map(str, test),
                    "--json", str(report_path), "--ethogram-dir", str(work / "ethograms")], check=True, cwd=ROOT)
    report = json.loads(report_path.read_text())
    rows = []
    for part in ("individual", "pair", "combined"):
        rows.append([f"{part} macro-F1"] + [f"{report['models'][m][part]['macro_f1']:.3f}"
                                            for m in ("frame", "temporal")])
    for b in report["behaviours"]:
        rows.append([f"F1 {b}"] + [f"{report['models'][m]['individual']['per_class'][b]['f1']:.3f}"
                                   for m in ("frame", "temporal")])
    rows.append(["shuffled-label chance macro-F1"] + [
        f"{report['models'][m]['individual']['shuffled_label_chance']['macro_f1_mean']:.3f}"
        for m in ("frame", "temporal")])
    return ("### BehaveNet: macro-F1 on held-out synth videos\n\n"
            f"Training took {train_s / 60:.1f} min. Command: `.venv/bin/python -m bench.bench_behavenet --accuracy`\n\n"
            + table(["score", "frame-only", "temporal"], rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accuracy", action="store_true", help="run the accuracy figure instead (about 15 minutes)")
    p.add_argument("--work", default=str(ROOT / ".tmp" / "bench-behavenet"), help="work folder of --accuracy")
    args = p.parse_args(argv)
    t0 = time.time()
    print(run_accuracy(Path(args.work)) if args.accuracy else run())
    print(f"({time.time() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
