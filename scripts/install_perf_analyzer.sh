#!/usr/bin/env bash
# Install Triton's perf_analyzer (the load client `bench/bench_load.py` uses against `sipec serve model-server`)
# into .tmp/perf-analyzer, from PyPI only. Needed for benchmarks, never for `make test`.
#
# perf_analyzer ships as a binary inside the tritonclient wheels up to 2.41 (later wheels moved it to a
# separate package without the binary). It links libcudart even when no GPU is used (nvidia-cuda-runtime-cu12
# from PyPI provides it) and libb64 (Debian: libb64-0d, installed with apt when this runs as root).
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.tmp/perf-analyzer
python3 -m venv "$DEST"
"$DEST/bin/pip" install -q "tritonclient[grpc]==2.41.0" nvidia-cuda-runtime-cu12
if ! ldconfig -p | grep -q libb64.so.0d; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get install -y -q libb64-0d >/dev/null
    else
        echo "install_perf_analyzer: libb64.so.0d is missing; install Debian's libb64-0d (or your system's libb64)" >&2
        exit 1
    fi
fi
CUDA_LIB=$(ls -d "$DEST"/lib/python3*/site-packages/nvidia/cuda_runtime/lib)
LD_LIBRARY_PATH="$CUDA_LIB" "$DEST/bin/perf_analyzer" --version
echo "perf_analyzer installed in $DEST/bin (bench/bench_load.py finds it there)"
