"""`make bench`: run every benchmark and append a dated section to docs/benchmarks.md.

Each entry of BENCHMARKS is a module with `run() -> str`, or `module:function` with such a function, returning a
markdown block (its own heading, command and table). The section records the machine, so anyone can rerun and
compare. Models: the end-to-end, per-module and load benchmarks use demo-out/models (`make demo` trains them) and
fall back to random-weight models or say they skipped; the flies benchmark uses $SIPEC_BENCH_FLIES_REPO (models
trained on ../shared/data/sleap-flies-clip; commands in docs/benchmarks.md) and skips without it. The load
benchmark's perf_analyzer part needs `bash scripts/install_perf_analyzer.sh` once. All of it took 20
minutes on 2 cores (2026-11-21).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
import time
import traceback
from pathlib import Path

from bench.common import machine

BENCHMARKS = ("bench.bench_synth", "bench.bench_serving", "bench.bench_tracker", "bench.bench_idnet",
              "bench.bench_posenet", "bench.bench_segnet", "bench.bench_behavenet", "bench.bench_modules",
              "bench.bench_load", "bench.bench_analyze", "bench.bench_analyze:run_memory",
              "bench.bench_analyze:run_flies_from_env")
DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", help="comma-separated benchmark module names (e.g. bench_serving)")
    p.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = p.parse_args(argv)
    names = [m for m in BENCHMARKS if not args.only or m.split(".")[-1] in args.only.split(",")
             or m.split(".")[-1].split(":")[0] in args.only.split(",")]
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"## {stamp}: `make bench`\n", f"Machine: {machine()}.\n"]
    failed = 0
    for name in names:
        t0 = time.time()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        try:
            module, _, function = name.partition(":")
            parts.append(getattr(importlib.import_module(module), function or "run")())
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed += 1
            parts.append(f"### {name}\n\nFAILED:\n\n```\n{traceback.format_exc(limit=5)}```\n")
        print(f"bench: {name} done in {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    section = "\n".join(parts) + "\n"
    print(section)
    if not args.no_write:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        existing = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
        DOC.write_text(existing.rstrip("\n") + "\n\n" + section)
        print(f"bench: appended to {DOC}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
