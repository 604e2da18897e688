"""End to end: `sipec analyze` frames per second, in-process vs local gRPC services, with peak memory.

`.venv/bin/python -m bench.bench_analyze REPO [--frames 300] [--animals 4] [--size 640x480]`

REPO is a model repository with the modules to run (segnet, idnet, posenet, behavenet; the tracker needs no
model). A `sipec synth` video is made, then analysed twice with the same pipeline.yaml: in-process (`--models
REPO`), and over gRPC after `sipec up` (`--services local`). Each `sipec analyze` is a child process; its peak
resident memory is GNU time's maximum resident set size; the services' own memory is their processes' peak RSS
(VmHWM in /proc) at the end. The decoder's frames per second is in each run's summary.json.

Without REPO it uses demo-out/models (what `make demo` trained), else says so and stops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
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


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


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
        (d / "pipeline.yaml").write_text(f"modules: [{', '.join(modules)}]\n"
                                         "outputs: {annotated_video: false, pose: false, ethogram: false, "
                                         "density: false}\n")
        rows = []
        t0 = time.time()
        rss, s_in = _analyze([str(video), "--models", str(repo), "--out", str(d / "inproc"),
                              "--config", str(d / "pipeline.yaml")])
        fps_in = s_in["frames_analysed"] / s_in["seconds"]
        rows.append(["in-process", f"{fps_in:.1f}", "1.00", f"{s_in['decode_fps']:.0f}", f"{rss:.0f}", "-"])
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
        rows.append(["local gRPC services", f"{fps_grpc:.1f}", f"{fps_grpc / fps_in:.2f}",
                     f"{s_grpc['decode_fps']:.0f}", f"{rss:.0f}",
                     ", ".join(f"{n} {v:.0f}" for n, v in services.items())])
        wall = time.time() - t0
    return ("### End to end: `sipec analyze` in-process vs local services\n\n"
            f"`.venv/bin/python -m bench.bench_analyze {model_repo} --frames {frames} --animals {animals} "
            f"--size {size}`\n\n"
            f"Modules: {', '.join(modules)}; a `sipec synth` video of {frames} frames, {animals} animals, {size}; "
            "output files other than the results table off (rendering the annotated video is not the pipeline). "
            "Frames per second over the whole video (first frame to last completed frame, models loaded); "
            f"memory: peak resident set of the `sipec analyze` process, and of each service. Wall time of the "
            f"benchmark {wall:.0f} s.\n\n"
            + table(["path", "frames/s", "vs in-process", "decoder frames/s", "analyze peak RSS MB",
                     "services' peak RSS MB"], rows) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_repo", nargs="?")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--animals", type=int, default=4)
    p.add_argument("--size", default="640x480")
    a = p.parse_args()
    print(run(a.model_repo, a.frames, a.animals, a.size))


if __name__ == "__main__":
    main()
