#!/usr/bin/env bash
# Configures and builds codecllm into build/ (Release). Extra arguments go to cmake, e.g.
#   scripts/build.sh -DCLLM_CUDA=OFF
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
build_dir=${CLLM_BUILD_DIR:-build}
mkdir -p "$build_dir"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$build_dir/configure.log" 2>&1 || { cat "$build_dir/configure.log" >&2; exit 1; }
cmake --build "$build_dir" -j"$(nproc)"
