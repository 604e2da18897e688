"""End to end: `sipec analyze` frames per second, in-process vs local gRPC services, with peak memory.

`.venv/bin/python -m bench.bench_analyze REPO [--frames 300] [--animals 4] [--size 640x480]`

REPO is a model repository with the modules to run (segnet, idnet, posenet, behavenet; the tracker needs no
model). A `sipec synth` video is made, then analysed twice with the same pipeline.yaml: in-process (`--models
REPO`), and over gRPC after `sipec up` (`--services local`). Each `sipec analyze` is a child process; its peak
resident memory is GNU time's maximum resident set size; the services' own memory is their processes' peak RSS
(VmHWM in /proc) at the end. The decoder's frames per second is in each run's summary.json.

Without REPO it uses demo-out/models (what `make demo` trained), else says so and stops.

`--memory` (`run_memory`): peak memory of an in-process `sipec analyze` (all modules in one process: the
tracker's state, BehaveNet's windows, the results writer) on synth videos of 1,000 and 10,000 frames, made
with the same seed and settings (320x240 by default: the demo models' size). Flat means within 10%.

`--flies FLIES_REPO` (`run_flies`): the same in-process vs services comparison on
../shared/data/sleap-flies-clip (1500 frames, 1024x1024, 2 flies), with models trained on the flies
(see docs/benchmarks.md for the commands); modules without a model in FLIES_REPO are left out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import table

ROOT = Path(__file__).resolve().parent.parent
ALL = ("segnet", "tracker", "idnet", "posenet", "behavenet")


def _sipec(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sipec", *args], cwd=ROOT, text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"sipec {' '.join(args)} failed:\n{r.stderr[-3000:]}")
    return r


def _status_mb(pid: int, key: str) -> float | None:
    """A memory figure of /proc/PID/status in MB (`VmHWM`: peak resident, `VmRSS`: resident now), or None."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_rss_mb(pid: int) -> float:
    peak = _status_mb(pid, "VmHWM")
    return float("nan") if peak is None else peak


def _analyze(args: list[str]) -> tuple[float, dict]:
    """(peak RSS MB of the analyze process, by GNU time, summary.json) of one `sipec analyze` run."""
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, sys.executable, "-m", "sipec", "analyze",
                            *args, "--quiet"], cwd=ROOT, text=True, capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"sipec analyze failed:\n{r.stderr[-3000:]}")
        peak_kb = float(Path(rss.name).read_text().split()[-1])
    out = Path(args[args.index("--out") + 1])
    return peak_kb / 1024, json.loads(next(out.glob("*/summary.json")).read_text())


def _analyze_sampled(args: list[str], period_s: float = 0.5) -> tuple[float, dict, list[tuple[int, float]]]:
    """Like `_analyze`, and also (last completed frame, resident MB) every `period_s` while it runs: the frame
    from the run's progress.json (checkpointed every `chunk_frames` frames)."""
    out = Path(args[args.index("--out") + 1])
    samples: list[tuple[int, float]] = []
    proc = subprocess.Popen([sys.executable, "-m", "sipec", "analyze", *args, "--quiet"], cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0.0
    stderr_tail: list[str] = []
    drain = threading.Thread(target=lambda: stderr_tail.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    while proc.poll() is None:
        rss = _status_mb(proc.pid, "VmRSS")
        peak = max(peak, _peak_rss_mb(proc.pid) if rss is not None else 0.0, rss or 0.0)
        progress = next(out.glob("*/progress.json"), None)
        frame = -1
        if progress is not None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                frame = int(json.loads(progress.read_text())["last_completed_frame"])
        if rss is not None:
            samples.append((frame, rss))
        time.sleep(period_s)
    drain.join(10)
    if proc.returncode != 0:
        raise RuntimeError("sipec analyze failed:\n" + "".join(stderr_tail)[-3000:])
    return peak, json.loads(next(out.glob("*/summary.json")).read_text()), samples


def _rss_at(samples: list[tuple[int, float]], frame: int) -> float:
    """Resident MB at the first sample whose checkpoint reached `frame` (the highest before it if none)."""
    at = [rss for f, rss in samples if f >= frame]
    return at[0] if at else max(rss for _, rss in samples)


def run(model_repo: str | None = None, frames: int = 300, animals: int = 4, size: str = "640x480") -> str:
    if not model_repo and (ROOT / "demo-out" / "models" / "segnet").is_dir():
        model_repo = str(ROOT / "demo-out" / "models")     # what `make demo` trained
    if not model_repo:
        return ("### End to end: `sipec analyze` in-process vs local services\n\n"
                "Skipped: needs a model repository (`python -m bench.bench_analyze REPO`; `make demo` makes one in "
                "demo-out/models).\n")
    repo = Path(model_repo).resolve()
    modules = [m for m in ALL if m == "tracker" or (repo / m).is_dir()]
    with tempfile.TemporaryDirectory(prefix="sipec-bench-analyze-") as tmp:
        d = Path(tmp)
        _sipec("synth", "--out", str(d / "synth"), "--animals", str(animals), "--frames", str(frames), "--size", size,
               "--seed", "5", "--quiet")
        video = d / "synth" / "video.mp4"
        t0 = time.time()
        rows, _ = _compare(repo, video, d, modules)
        wall = time.time() - t0
    return ("### End to end: `sipec analyze` in-process vs local services\n\n"
            f"`.venv/bin/python -m bench.bench_analyze {model_repo} --frames {frames} --animals {animals} "
            f"--size {size}`\n\n"
            f"Modules: {', '.join(modules)}; a `sipec synth` video of {frames} frames, {animals} animals, {size}; "
            "output files other than the results table off (rendering the annotated video is not the pipeline). "
            "Frames per second over the whole video (first frame to last completed frame, models loaded); "
            f"memory: peak resident set of the `sipec analyze` process, and of each service. Wall time of the "
            f"benchmark {wall:.0f} s.\n\n"
            + table(HEADER, rows) + "\n")


def _compare(repo: Path, video: Path, d: Path, modules: list[str]) -> tuple[list[list[str]], float]:
    """Rows of the in-process and local-services runs of one video (same pipeline.yaml), and the gRPC/in ratio."""
    (d / "pipeline.yaml").write_text(f"modules: [{', '.join(modules)}]\n"
                                     "outputs: {annotated_video: false, pose: false, ethogram: false, "
                                     "density: false}\n")
    rss, s_in = _analyze([str(video), "--models", str(repo), "--out", str(d / "inproc"),
                          "--config", str(d / "pipeline.yaml")])
    fps_in = s_in["frames_analysed"] / s_in["seconds"]
    rows = [["in-process", f"{fps_in:.1f}", "1.00", f"{s_in['decode_fps']:.0f}", f"{rss:.0f}", "-"]]
    state = d / "state"
    _sipec("up", "--models", str(repo), "--modules", ",".join(modules), "--state-dir", str(state))
    try:
        pids = {s["name"]: s["pid"] for s in json.loads((state / "services.json").read_text())}
        rss, s_grpc = _analyze([str(video), "--services", "local", "--state-dir", str(state),
                                "--out", str(d / "grpc"), "--config", str(d / "pipeline.yaml")])
        services = {n: _peak_rss_mb(p) for n, p in pids.items()}
    finally:
        _sipec("down", "--state-dir", str(state))
    fps_grpc = s_grpc["frames_analysed"] / s_grpc["seconds"]
    rows.append(["local gRPC services", f"{fps_grpc:.1f}", f"{fps_grpc / fps_in:.2f}", f"{s_grpc['decode_fps']:.0f}",
                 f"{rss:.0f}", ", ".join(f"{n} {v:.0f}" for n, v in services.items())])
    return rows, fps_grpc / fps_in


HEADER = ["path", "frames/s", "vs in-process", "decoder frames/s", "analyze peak RSS MB", "services' peak RSS MB"]


def run_flies(model_repo: str, clip: str | None = None) -> str:
    """In-process vs local services on the flies clip with flies-trained models."""
    repo = Path(model_repo).resolve()
    video = Path(clip) if clip else ROOT.parent / "shared" / "data" / "sleap-flies-clip" / "clip.mp4"
    if not video.is_file():
        return f"### End to end on sleap-flies-clip\n\nSkipped: {video} not found.\n"
    modules = [m for m in ALL if m == "tracker" or (repo / m).is_dir()]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sipec-bench-flies-") as tmp:
        rows, _ = _compare(repo, video, Path(tmp), modules)
    return ("### End to end on ../shared/data/sleap-flies-clip: in-process vs local services\n\n"
            f"`.venv/bin/python -m bench.bench_analyze --flies {model_repo}`\n\n"
            f"Modules: {', '.join(modules)} (models in {model_repo}); 1500 frames of 1024x1024 H.264, 2 flies; output "
            f"files other than the results table off. Wall time {time.time() - t0:.0f} s.\n\n"
            + table(HEADER, rows) + "\n")


def run_flies_from_env() -> str:
    """`make bench`: the flies benchmark when $SIPEC_BENCH_FLIES_REPO names a repository of flies models."""
    repo = os.environ.get("SIPEC_BENCH_FLIES_REPO")
    if not repo:
        return ("### End to end on ../shared/data/sleap-flies-clip\n\nSkipped: set SIPEC_BENCH_FLIES_REPO to a "
                "repository of models trained on the flies (commands in docs/benchmarks.md).\n")
    return run_flies(repo)


def run_memory(model_repo: str | None = None, lengths: tuple[int, ...] = (1000, 10000), animals: int = 4,
               size: str = "320x240") -> str:
    """Peak memory of in-process `sipec analyze` on videos of each length (same synth settings)."""
    if not model_repo and (ROOT / "demo-out" / "models" / "segnet").is_dir():
        model_repo = str(ROOT / "demo-out" / "models")
    if not model_repo:
        return ("### Memory against video length\n\nSkipped: needs a model repository "
                "(`python -m bench.bench_analyze --memory REPO`; `make demo` makes one).\n")
    repo = Path(model_repo).resolve()
    modules = [m for m in ALL if m == "tracker" or (repo / m).is_dir()]
    rows, peaks = [], []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sipec-bench-memory-") as tmp:
        d = Path(tmp)
        (d / "pipeline.yaml").write_text(f"modules: [{', '.join(modules)}]\n"
                                         "outputs: {annotated_video: false, pose: false, ethogram: false, "
                                         "density: false}\n")
        for n in lengths:
            _sipec("synth", "--out", str(d / f"synth{n}"), "--animals", str(animals), "--frames", str(n), "--size",
                   size, "--seed", "5", "--quiet")
            rss, summ, samples = _analyze_sampled([str(d / f"synth{n}" / "video.mp4"), "--models", str(repo),
                                                   "--out", str(d / f"out{n}"), "--config", str(d / "pipeline.yaml")])
            peaks.append(rss)
            streaming = [r for f, r in samples if 0 <= f < n - 1]
            marks = [m for m in (lengths[0] - 1, n // 2 - 1, n - 1) if m >= 0]
            rows.append([str(n), str(summ["frames_analysed"]), f"{summ['frames_analysed'] / summ['seconds']:.1f}",
                         f"{rss:.0f}", f"{rss / peaks[0]:.3f}", f"{max(streaming):.0f}" if streaming else "-",
                         ", ".join(f"{m + 1}: {_rss_at(samples, m):.0f}" for m in sorted(set(marks)))])
            shutil.rmtree(d / f"synth{n}", ignore_errors=True)
    growth = peaks[-1] / peaks[0] - 1
    verdict = "flat within 10%: aim met" if abs(growth) <= 0.10 else "NOT flat within 10%: aim missed"
    return ("### Memory against video length: `sipec analyze` in-process\n\n"
            f"`.venv/bin/python -m bench.bench_analyze --memory {model_repo} --size {size} --animals {animals}`\n\n"
            f"Modules: {', '.join(modules)}, all in the one `sipec analyze` process; `sipec synth` videos with "
            f"{animals} animals at {size}, seed 5; peak resident set (VmHWM of the process). From {lengths[0]} to "
            f"{lengths[-1]} frames the peak changed by {growth * 100:+.1f}% ({verdict}). Resident memory is also "
            "sampled every 0.5 s with the last checkpointed frame (progress.json, every 200 frames): the largest "
            f"while frames stream, and at given frames. Wall time {time.time() - t0:.0f} s.\n\n"
            + table(["frames", "frames analysed", "frames/s", "peak RSS MB", f"peak vs {lengths[0]} frames",
                     "largest RSS MB while streaming", "RSS MB at frame"], rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_repo", nargs="?")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--animals", type=int, default=4)
    p.add_argument("--size", default=None, help="video size (default 640x480; 320x240 with --memory)")
    p.add_argument("--memory", action="store_true", help="peak memory on 1,000 vs 10,000 frames instead")
    p.add_argument("--lengths", default="1000,10000", help="video lengths of --memory")
    p.add_argument("--flies", metavar="FLIES_REPO", help="in-process vs services on the flies clip instead")
    a = p.parse_args()
    if a.flies:
        print(run_flies(a.flies))
    elif a.memory:
        print(run_memory(a.model_repo, tuple(int(x) for x in a.lengths.split(",")), a.animals, a.size or "320x240"))
    else:
        print(run(a.model_repo, a.frames, a.animals, a.size or "640x480"))


if __name__ == "__main__":
    main()
