"""Every module at batch 1 and 16: the model in-process, the servicer in-process, and the service over gRPC.

`.venv/bin/python -m bench.bench_modules [REPO]`

REPO is a model repository with segnet, idnet-frame, posenet and behavenet (what `make demo` trains, in
demo-out/models, is used when REPO is not given); without either, random-weight models of the CPU
configurations `sipec train` uses are exported into a temporary repository (the speed of a graph does not
depend on its weights; SegNet's postprocessing does depend on how many detections pass, so trained is better).

One item is what the module handles per animal and frame: a 640x480 frame for SegNet, a crop (with its mask for
IdNet) for the others. For each module and batch B:

- model in-process: the exported SavedModel called in this process on B prepared inputs (letterboxed frames,
  masked and resized crops): the network alone, the ceiling;
- servicer in-process: the service's own code called directly on a request of B raw items (decoding, resizing,
  masking, the model, postprocessing: peaks, mask pasting and RLE), no gRPC;
- service over gRPC: `sipec serve MODULE` in its own process on localhost, a request of B raw items (SegNet:
  unary Segment at B=1, SegmentStream of B frames at B=16 with `--max-batch 16`; BehaveNet: ClassifyStream of
  4 subjects with `--max-batch B`, since its window needs a stream);
- ratio: service / model. The aim (issue #11) is >= 0.9 at batch 16.

Rounds of the three paths are interleaved, so drift from other processes hits them alike; median of rounds.
The model server row is the PoseNet model through `sipec serve model-server` (TF Serving's Predict) against
the same SavedModel loaded in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.common import machine, median, table, time_calls

ROOT = Path(__file__).resolve().parent.parent
BATCHES = (1, 16)
ROUNDS = 3
AIM = 0.9
STREAM_CALLS = 8      # requests of B items in one stream: the next is on its way while one is computed


def _random_repo(repo: Path) -> None:
    """Random-weight CPU configurations, exported as `sipec train` would (reusing the per-module benchmarks)."""
    from bench import bench_behavenet, bench_posenet, bench_segnet
    from bench.bench_idnet import _export as export_idnet

    bench_segnet._export_untrained(repo)
    export_idnet(repo)
    bench_posenet._export(repo)
    bench_behavenet._export(repo)


def _frames(n: int) -> np.ndarray:
    from bench.bench_segnet import _frames

    return _frames(n)


def _rounds(fns: dict[str, callable], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, over ROUNDS interleaved rounds of `repeats` calls."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(ROUNDS):
        for k, fn in fns.items():
            times[k] += time_calls(fn, repeats, warmup=1)
    return {k: median(v) for k, v in times.items()}


def _row(module: str, unit: str, batch: int, per_call: dict[str, float], items: int) -> list[str]:
    ips = {k: items / v for k, v in per_call.items()}
    best = max(ips["service"], ips.get("stream", 0.0))
    ratio = best / ips["model"]

    def cell(k: str) -> str:
        return f"{ips[k]:.0f}" if k in ips else "-"
    return [module, unit, str(batch), cell("model"), cell("servicer"), cell("service"), cell("stream"),
            f"{ratio:.2f}" + (" (aim met)" if batch == 16 and ratio >= AIM else "")]


def _segnet(repo: Path, frames: np.ndarray, repeats: int) -> list[list[str]]:
    from services.segnet.data import letterbox
    from services.segnet.service import SegNetServicer
    from sipec.api.convert import image_to_proto
    from sipec.serving.backends import LocalBackend
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.process import spawn_sipec
    from sipec.v1 import segnet_pb2, segnet_pb2_grpc

    backend = LocalBackend(repo, "segnet")
    info = backend.metadata().info
    size = (int(info["input"]["height"]), int(info["input"]["width"]))
    servicer = SegNetServicer(backend, max_batch=16)
    reqs = [segnet_pb2.SegmentRequest(image=image_to_proto(f)) for f in frames]
    proc, port = spawn_sipec(["serve", "segnet", "--model-repo", str(repo), "--port", "0", "--max-batch", "16"])
    rows = []
    try:
        channel = make_channel(f"localhost:{port}")
        wait_for_serving(channel, timeout_s=120)
        stub = segnet_pb2_grpc.SegNetStub(channel)
        for b in BATCHES:
            boxed = np.stack([letterbox(f, *size)[0] for f in frames[:b]])
            fns = {"model": lambda x=boxed: backend.predict({"image": x}),
                   "servicer": lambda r=reqs[:b]: servicer._answer_batch(r)}
            if b == 1:
                fns["service"] = lambda r=reqs[0]: stub.Segment(r, timeout=120)
            else:
                fns["service"] = lambda r=reqs[:b]: list(stub.SegmentStream(iter(r), timeout=300))
            fns["stream"] = lambda r=reqs * STREAM_CALLS: list(stub.SegmentStream(iter(r), timeout=600))
            per_call = _rounds(fns, repeats)
            per_call["stream"] /= STREAM_CALLS * len(reqs) / b
            rows.append(_row("SegNet", f"frames {frames.shape[2]}x{frames.shape[1]}", b, per_call, b))
        channel.close()
    finally:
        proc.terminate()
        proc.wait(30)
        backend.close()
    return rows


def _idnet(repo: Path, repeats: int) -> list[list[str]]:
    from services.idnet.masking import MaskSettings, prepare_sequence
    from services.idnet.service import create_servicer
    from sipec.api.convert import frame_ref_to_proto, image_to_proto, mask_to_proto
    from sipec.serving.backends import LocalBackend
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.process import spawn_sipec
    from sipec.v1 import idnet_pb2, idnet_pb2_grpc

    name = "idnet-frame"
    backend = LocalBackend(repo, name)
    settings = MaskSettings.from_json(backend.metadata().info["masking"])
    servicer = create_servicer(repo, name)
    side = settings.crop_px
    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (16, side, side, 3), dtype=np.uint8)
    masks = np.zeros((16, side, side), bool)
    masks[:, side // 4:3 * side // 4, side // 6:5 * side // 6] = True
    prepared = np.stack([prepare_sequence([c], [m], settings) for c, m in zip(crops, masks, strict=True)])
    stream = [idnet_pb2.IdentifyStreamRequest(frame=frame_ref_to_proto("bench", t, t / 30), track_id=k + 1,
                                              crop=image_to_proto(crops[(t * 4 + k) % 16]),
                                              mask=mask_to_proto(masks[(t * 4 + k) % 16]))
              for t in range(32) for k in range(4)]
    rows = []
    try:
        for b in BATCHES:
            proc, port = spawn_sipec(["serve", "idnet", "--model-repo", str(repo), "--model-name", name,
                                      "--port", "0", "--max-batch", str(b)])
            try:
                channel = make_channel(f"localhost:{port}")
                wait_for_serving(channel, timeout_s=120)
                stub = idnet_pb2_grpc.IdNetStub(channel)
                req = idnet_pb2.IdentifyRequest(sequences=[idnet_pb2.CropSequence(
                    crops=[image_to_proto(crops[i])], masks=[mask_to_proto(masks[i])]) for i in range(b)])
                fns = {"model": lambda x=prepared[:b]: backend.predict({"crops": x}),
                       "servicer": lambda r=req: servicer.Identify(r, None),
                       "service": lambda r=req, s=stub: s.Identify(r, timeout=120),
                       "stream": lambda s=stub: list(s.IdentifyStream(iter(stream), timeout=300))}
                per_call = _rounds(fns, repeats)
                per_call["stream"] /= len(stream) / b
                rows.append(_row("IdNet (frame network)", f"crops {side}x{side} + mask", b, per_call, b))
                channel.close()
            finally:
                proc.terminate()
                proc.wait(30)
    finally:
        servicer.close()
        backend.close()
    return rows


def _posenet(repo: Path, repeats: int) -> tuple[list[list[str]], list[list[str]]]:
    from services.posenet.predict import estimate_crops
    from services.posenet.service import create_servicer
    from sipec.api.convert import image_to_proto
    from sipec.serving.backends import LocalBackend, TFServingBackend
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.models import LoadedModel
    from sipec.serving.process import spawn_sipec
    from sipec.serving.repository import ModelRepository
    from sipec.v1 import posenet_pb2, posenet_pb2_grpc

    backend = LocalBackend(repo, "posenet")
    info = backend.metadata().info
    size = int(info["input"]["height"])
    side = int(round(float(info.get("crop", {}).get("side_px", size))))
    servicer = create_servicer(repo)
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (16, side, side, 3), dtype=np.uint8)
    resized = rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8)
    proc, port = spawn_sipec(["serve", "posenet", "--model-repo", str(repo), "--port", "0"])
    ms, ms_port = spawn_sipec(["serve", "model-server", "--model-repo", str(repo), "--models", "posenet",
                               "--port", "0", "--poll-s", "0"])
    rows, ms_rows = [], []
    try:
        channel = make_channel(f"localhost:{port}")
        wait_for_serving(channel, timeout_s=120)
        wait_for_serving(make_channel(f"localhost:{ms_port}"), timeout_s=120)
        stub = posenet_pb2_grpc.PoseNetStub(channel)
        local = LoadedModel(ModelRepository(repo).get("posenet"))
        remote = TFServingBackend(f"localhost:{ms_port}", "posenet")
        for b in BATCHES:
            req = posenet_pb2.PoseRequest()
            for i in range(b):
                req.crops.add(crop=image_to_proto(raw[i]), key=str(i))
            fns = {"model": lambda x=resized[:b]: estimate_crops(backend, x),
                   "servicer": lambda r=req: servicer.EstimatePose(r, None),
                   "service": lambda r=req: stub.EstimatePose(r, timeout=120),
                   "stream": lambda r=req: list(stub.EstimatePoseStream(iter([r] * STREAM_CALLS), timeout=300))}
            per_call = _rounds(fns, repeats)
            per_call["stream"] /= STREAM_CALLS
            rows.append(_row("PoseNet", f"crops {side}x{side} (model {size}x{size})", b, per_call, b))
            inputs = {name: resized[:b] for name in local.signature(None)[1].inputs}
            fns = {"model": lambda x=inputs: local.predict(x), "service": lambda x=inputs: remote.predict(x)}
            ms_rows.append(_row("model server: Predict (PoseNet SavedModel)", f"inputs {size}x{size}", b,
                                _rounds(fns, repeats), b))
        remote.close()
        channel.close()
    finally:
        for p in (proc, ms):
            p.terminate()
            p.wait(30)
        servicer.close()
        backend.close()
    return rows, ms_rows


def _behavenet(repo: Path, repeats: int) -> list[list[str]]:
    from services.behavenet.crops import resize_crop
    from sipec.api.convert import frame_ref_to_proto, image_to_proto
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.models import LoadedModel
    from sipec.serving.process import spawn_sipec
    from sipec.serving.repository import ModelRepository
    from sipec.v1 import behavenet_pb2, behavenet_pb2_grpc

    r = ModelRepository(repo)
    info = r.get("behavenet").metadata()
    features, temporal = LoadedModel(r.get("behavenet-features")), LoadedModel(r.get("behavenet"))
    size, side = int(info["crops"]["input_size"]), int(info["crops"]["crop_px"])
    window = int(info["window"]["size"]) if "window" in info else 2 * int(info["temporal"]["n"]) + 1
    feat_dim = int(info.get("feature_size", 512))
    subjects, frames = 4, 40
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (64, side, side, 3), dtype=np.uint8)
    small = np.stack([resize_crop(c, size) for c in raw[:16]])
    windows = rng.normal(size=(16, window, feat_dim)).astype(np.float32)
    reqs = [behavenet_pb2.BehaviourFrame(frame=frame_ref_to_proto("bench", t, t / 30), subject=str(s),
                                         crop=image_to_proto(raw[(t * subjects + s) % len(raw)]))
            for t in range(frames) for s in range(subjects)]
    rows = []
    for b in BATCHES:
        proc, port = spawn_sipec(["serve", "behavenet", "--model-repo", str(repo), "--port", "0",
                                  "--max-batch", str(b)])
        try:
            channel = make_channel(f"localhost:{port}")
            wait_for_serving(channel, "sipec.v1.BehaveNet", timeout_s=120)
            stub = behavenet_pb2_grpc.BehaveNetStub(channel)
            per_call = _rounds({
                "model": lambda x=small[:b], w=windows[:b]: (features.predict({"crop": x}),
                                                            temporal.predict({"features": w})),
                "service": lambda s=stub: list(s.ClassifyStream(iter(reqs), timeout=600))}, max(1, repeats // 2))
            per_call["service"] /= len(reqs) / b        # seconds per b crops, as the model's
            rows.append(_row("BehaveNet (features + temporal)", f"crops {side}x{side} (model {size}x{size})", b,
                             per_call, b))
            channel.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return rows


@contextlib.contextmanager
def repository(model_repo: str | None) -> Iterator[tuple[Path, str | None]]:
    """(repository, its name for the report): MODEL_REPO, else demo-out/models, else random-weight CPU
    configurations exported into a temporary folder (name None)."""
    if not model_repo and (ROOT / "demo-out" / "models" / "segnet").is_dir():
        model_repo = str(ROOT / "demo-out" / "models")
    if model_repo:
        yield Path(model_repo).resolve(), model_repo
        return
    with tempfile.TemporaryDirectory(prefix="sipec-bench-repo-") as tmp:
        _random_repo(Path(tmp))
        yield Path(tmp), None


def run(model_repo: str | None = None, repeats: int = 5) -> str:
    t0 = time.time()
    with repository(model_repo) as (repo, model_repo):
        frames = _frames(16)
        rows = _segnet(repo, frames, repeats)
        rows += _idnet(repo, repeats)
        pose_rows, ms_rows = _posenet(repo, repeats)
        rows += pose_rows
        rows += _behavenet(repo, repeats)
        rows += ms_rows
    what = f"models of {model_repo}" if model_repo else "random-weight CPU configurations (no REPO, no demo-out)"
    cmd = f".venv/bin/python -m bench.bench_modules {model_repo or ''}".rstrip()
    return ("### Per module: batch 1 and 16, model vs servicer vs service over gRPC\n\n"
            f"`{cmd}`\n\n"
            f"Machine: {machine()}. {what}; items per second, median of {ROUNDS} interleaved rounds of {repeats} "
            "calls (BehaveNet: whole streams of 4 x 40 crops); ratio = service / model, aim >= 0.9 at batch 16. "
            f"Wall time {time.time() - t0:.0f} s.\n\n"
            + table(["module", "item", "batch", "model in-process items/s", "servicer in-process items/s",
                     "service gRPC, one call at a time", "service gRPC stream", "best service / model"], rows) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_repo", nargs="?")
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args(argv)
    print(run(a.model_repo, a.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
