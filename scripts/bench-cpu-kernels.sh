#!/usr/bin/env bash
# The CPU kernels on 16-bit weights (src/model/cpu_kernels_bf16.h) against this machine's
# memory read bandwidth, on Llama-3.1-8B's layer shapes at batch 1, 4 and 16 (issue 8's target:
# >= 70% of the read bandwidth). Builds tests/bench-cpu-kernels into build-bench (CPU only)
# and runs it; extra arguments go to it, e.g.
#   scripts/bench-cpu-kernels.sh --threads 1,8,16 --isa avx2 --dtype f16 --no-layer
# Takes a few minutes and about 1.5 GB of RAM (4096x14336 weights copied past the caches).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${CLLM_BUILD_DIR:-build-bench}
if [ ! -x "$build/tests/bench-cpu-kernels" ]; then
  mkdir -p "$build"
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DCLLM_CUDA=OFF >"$build/configure.log" 2>&1 ||
    { cat "$build/configure.log" >&2; exit 1; }
  cmake --build "$build" -j"$(nproc)" --target bench-cpu-kernels
fi
lscpu | grep -E '^(Model name|CPU\(s\)|L3 cache)' >&2 || true
"$build/tests/bench-cpu-kernels" "$@"
