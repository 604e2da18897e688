"""Load: module services under 8 concurrent streams, and the model server under Triton's perf_analyzer.

`.venv/bin/python -m bench.bench_load [REPO] [--streams 8] [--seconds 20]`

REPO is a model repository (default demo-out/models, else random-weight CPU configurations exported into a
temporary one, as bench_modules does). Two parts:

1. Our load client, one `sipec serve MODULE` process per module (SegNet, IdNet frame network, PoseNet):
   `--streams` concurrent bidirectional streams for `--seconds` each, every stream closed-loop (it sends its next
   request when the previous one is answered, so the concurrency is exactly the number of streams, as
   perf_analyzer's). Per module: requests sent and answered, throughput, latency p50/p99 (request sent ->
   its answer received), errors (RPC failures plus answers carrying an error; the aim is 0). Requests are
   what `sipec analyze` sends: a 640x480 frame for SegNet, one crop with its mask per track for IdNet, the
   crops of a frame's 4 animals for PoseNet.

2. A load client that is not ours: Triton's `perf_analyzer` (`--service-kind tfserving`, gRPC) against
   `sipec serve model-server` on the PoseNet and IdNet SavedModels, at concurrency 1 and 8, batch 1.
   perf_analyzer is found on PATH, in $PERF_ANALYZER, or where `scripts/install_perf_analyzer.sh` puts it
   (.tmp/perf-analyzer); without it that part is skipped and says so. perf_analyzer stops at the first
   failed request, so a completed measurement means 0 errors.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import machine, table

ROOT = Path(__file__).resolve().parent.parent
PA_HOME = ROOT / ".tmp" / "perf-analyzer"


class _ClosedLoop:
    """One stream: send a request, wait for its answer, send the next; records latencies and errors."""

    def __init__(self, call: Callable, make_request: Callable[[int], object], is_error: Callable[[object], bool],
                 seconds: float) -> None:
        self.call, self.make_request, self.is_error, self.seconds = call, make_request, is_error, seconds
        self.latencies: list[float] = []
        self.sent = self.errors = 0
        self.rpc_error: str | None = None
        self._answered = threading.Semaphore(0)
        self._sent_at: list[float] = []

    def _requests(self):
        end = time.perf_counter() + self.seconds
        i = 0
        while time.perf_counter() < end:
            self._sent_at.append(time.perf_counter())
            self.sent += 1
            yield self.make_request(i)
            i += 1
            if not self._answered.acquire(timeout=60):
                return

    def run(self) -> None:
        try:
            for k, answer in enumerate(self.call(self._requests())):
                self.latencies.append(time.perf_counter() - self._sent_at[k])
                self.errors += int(self.is_error(answer))
                self._answered.release()
        except Exception as exc:  # noqa: BLE001 - a failed RPC is counted, the report goes on
            self.rpc_error = str(exc)[:200]


def _percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _load(name: str, call: Callable, make_request: Callable[[int], object], is_error: Callable[[object], bool],
          streams: int, seconds: float, items: int) -> list[str]:
    loops = [_ClosedLoop(call, make_request, is_error, seconds) for _ in range(streams)]
    threads = [threading.Thread(target=lp.run, name=f"load-{name}-{i}") for i, lp in enumerate(loops)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [x for lp in loops for x in lp.latencies]
    answered = len(lat)
    errors = sum(lp.errors for lp in loops) + sum(lp.rpc_error is not None for lp in loops)
    failed = "; ".join(sorted({lp.rpc_error for lp in loops if lp.rpc_error}))
    p50, p99 = _percentile(lat, 50) * 1000, _percentile(lat, 99) * 1000
    return [name, str(streams), str(sum(lp.sent for lp in loops)), str(answered), f"{answered / wall:.1f}",
            f"{answered * items / wall:.0f}", f"{p50:.1f}", f"{p99:.1f}",
            str(errors) + (f" ({failed})" if failed else "")]


def _module_rows(repo: Path, streams: int, seconds: float) -> list[list[str]]:
    from bench.bench_segnet import _frames
    from services.idnet.masking import MaskSettings
    from sipec.api.convert import frame_ref_to_proto, image_to_proto, mask_to_proto
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.process import spawn_sipec
    from sipec.serving.repository import ModelRepository
    from sipec.v1 import idnet_pb2, idnet_pb2_grpc, posenet_pb2, posenet_pb2_grpc, segnet_pb2, segnet_pb2_grpc

    rng = np.random.default_rng(0)
    frames = _frames(16)
    seg_reqs = [segnet_pb2.SegmentRequest(image=image_to_proto(f), frame=frame_ref_to_proto("load", i, i / 30))
                for i, f in enumerate(frames)]
    r = ModelRepository(repo)
    side = MaskSettings.from_json(r.get("idnet-frame").metadata()["masking"]).crop_px
    crops = rng.integers(0, 256, (16, side, side, 3), dtype=np.uint8)
    mask = np.zeros((side, side), bool)
    mask[side // 4:3 * side // 4, side // 6:5 * side // 6] = True
    id_crops = [image_to_proto(c) for c in crops]
    id_mask = mask_to_proto(mask)
    pose_info = r.get("posenet").metadata()
    pside = int(round(float(pose_info.get("crop", {}).get("side_px", pose_info["input"]["height"]))))
    pose_reqs = []
    for i in range(16):
        req = posenet_pb2.PoseRequest(frame=frame_ref_to_proto("load", i, i / 30))
        for a in range(4):
            req.crops.add(crop=image_to_proto(rng.integers(0, 256, (pside, pside, 3), dtype=np.uint8)), key=str(a))
        pose_reqs.append(req)

    counter = iter(range(10**9))
    lock = threading.Lock()

    def track_id() -> int:   # each stream is its own video: track ids may repeat across streams
        with lock:
            return next(counter) % 4 + 1

    cases = [
        ("segnet", ["--max-batch", "8"], lambda ch: segnet_pb2_grpc.SegNetStub(ch).SegmentStream,
         lambda i: seg_reqs[i % len(seg_reqs)], lambda a: False, 1, "frames 640x480"),
        ("idnet", ["--model-name", "idnet-frame"], lambda ch: idnet_pb2_grpc.IdNetStub(ch).IdentifyStream,
         lambda i: idnet_pb2.IdentifyStreamRequest(frame=frame_ref_to_proto("load", i, i / 30), track_id=track_id(),
                                                   crop=id_crops[i % 16], mask=id_mask),
         lambda a: a.result.HasField("error"), 1, f"crop {side}x{side} + mask"),
        ("posenet", [], lambda ch: posenet_pb2_grpc.PoseNetStub(ch).EstimatePoseStream,
         lambda i: pose_reqs[i % len(pose_reqs)], lambda a: any(p.HasField("error") for p in a.poses), 4,
         f"4 crops {pside}x{pside}"),
    ]
    rows = []
    for module, extra, method, make, is_error, items, what in cases:
        proc, port = spawn_sipec(["serve", module, "--model-repo", str(repo), "--port", "0", *extra])
        try:
            channel = make_channel(f"localhost:{port}")
            wait_for_serving(channel, timeout_s=120)
            call = method(channel)
            _load(module, lambda it, c=call: c(it, timeout=600), make, is_error, 1, 2.0, items)   # warm-up
            row = _load(module, lambda it, c=call: c(it, timeout=600), make, is_error, streams, seconds, items)
            rows.append([f"`sipec serve {module}` ({what} a request)"] + row[1:])
            channel.close()
        finally:
            proc.terminate()
            proc.wait(30)
    return rows


def find_perf_analyzer() -> tuple[str, dict[str, str]] | None:
    """(path, environment) of a runnable perf_analyzer, or None."""
    env = dict(os.environ)
    cuda = list((PA_HOME / "lib").glob("python3*/site-packages/nvidia/cuda_runtime/lib"))
    if cuda:   # the binary links libcudart even when it never uses a GPU; the pip wheel provides it
        env["LD_LIBRARY_PATH"] = f"{cuda[0]}:{env.get('LD_LIBRARY_PATH', '')}".rstrip(":")
    for candidate in (os.environ.get("PERF_ANALYZER"), shutil.which("perf_analyzer"),
                      PA_HOME / "bin" / "perf_analyzer"):
        if candidate and Path(candidate).is_file():
            r = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, env=env)
            if "error while loading shared libraries" not in r.stderr:
                return str(candidate), env
    return None


def _perf_analyzer_rows(repo: Path, seconds: float) -> tuple[list[list[str]], str]:
    from sipec.serving.client import make_channel, wait_for_serving
    from sipec.serving.process import spawn_sipec

    found = find_perf_analyzer()
    if found is None:
        return [], ("Skipped: perf_analyzer not found (PATH, $PERF_ANALYZER, .tmp/perf-analyzer); "
                    "`bash scripts/install_perf_analyzer.sh` installs it.")
    exe, env = found
    version = subprocess.run([exe, "--version"], capture_output=True, text=True, env=env).stdout.strip()
    proc, port = spawn_sipec(["serve", "model-server", "--model-repo", str(repo), "--models", "posenet,idnet-frame",
                              "--port", "0", "--poll-s", "0"])
    rows = []
    try:
        wait_for_serving(make_channel(f"localhost:{port}"), timeout_s=120)
        for model in ("posenet", "idnet-frame"):
            for conc in (1, 8):
                cmd = [exe, "-m", model, "--service-kind=tfserving", "-i", "grpc", "-u", f"localhost:{port}",
                       "--concurrency-range", str(conc), "-b", "1", "--percentile", "99",
                       "-p", str(int(seconds * 1000 / 3)), "-r", "6"]
                r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
                out = r.stdout + r.stderr

                def grab(pattern: str, text: str = out) -> str:
                    m = re.search(pattern, text)
                    return m.group(1) if m else "?"

                def ms(pattern: str) -> str:
                    value = grab(pattern)
                    return f"{float(value) / 1000:.1f}" if value != "?" else "-"
                ok = r.returncode == 0
                rows.append([model, str(conc), grab(r"Request count: (\d+)"), grab(r"Throughput: ([\d.]+) infer/sec"),
                             ms(r"p50 latency: (\d+) usec"), ms(r"p99 latency: (\d+) usec"),
                             "0" if ok else f"failed: {out.strip().splitlines()[-1][:150]}"])
    finally:
        proc.terminate()
        proc.wait(30)
    cmd_text = (f"perf_analyzer -m MODEL --service-kind=tfserving -i grpc -u localhost:PORT --concurrency-range C "
                f"-b 1 --percentile 99 -p {int(seconds * 1000 / 3)} -r 6")
    return rows, f"{version or 'perf_analyzer'}; per row: `{cmd_text}` (p99-stabilised measurement windows)."


def run(model_repo: str | None = None, streams: int = 8, seconds: float = 20.0) -> str:
    from bench.bench_modules import repository

    t0 = time.time()
    with repository(model_repo) as (repo, model_repo):
        rows = _module_rows(repo, streams, seconds)
        pa_rows, pa_note = _perf_analyzer_rows(repo, seconds)
    what = f"models of {model_repo}" if model_repo else "random-weight CPU configurations"
    cmd = f".venv/bin/python -m bench.bench_load {model_repo or ''} --streams {streams} --seconds {seconds:g}"
    total = sum(int(r[2]) for r in rows)
    errs = sum(int(r[-1].split()[0]) for r in rows)
    parts = ["### Load: module services under concurrent streams, the model server under perf_analyzer", "",
             f"`{cmd}`", "",
             f"Machine: {machine()}; {what}. Client and server share the machine's cores. Each stream is closed-loop "
             f"(next request when the previous is answered) for {seconds:g} s; latency = request sent -> its answer. "
             f"In all: {total} requests, {errs} errors. Wall time of the benchmark {{wall}} s.", "",
             table(["service", "streams", "requests sent", "answered", "requests/s", "items/s", "p50 ms", "p99 ms",
                    "errors"], rows), ""]
    parts += ["perf_analyzer (Triton) against `sipec serve model-server`, TF Serving's Predict, batch 1: "
              + pa_note, ""]
    if pa_rows:
        parts += [table(["model", "concurrency", "requests", "infer/s", "p50 ms", "p99 ms", "errors"], pa_rows), ""]
    return "\n".join(parts).replace("{wall}", f"{time.time() - t0:.0f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_repo", nargs="?")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    a = p.parse_args(argv)
    print(run(a.model_repo, a.streams, a.seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
