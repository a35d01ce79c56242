#!/usr/bin/env bash
# One command from a fresh Debian machine to a tested build: install, build, run every test.
# GPU tests ([gpu]) are reported as skipped where no CUDA device exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh "$@"
cd "${CLLM_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 900
