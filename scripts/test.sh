#!/usr/bin/env bash
# One command from a fresh Debian machine to a tested build: install, build, run every test.
# GPU tests ([gpu]) are reported as skipped where no CUDA device exists.
#
#   scripts/test.sh [CMAKE_ARGS...]              Release build in build/ (or $CLLM_BUILD_DIR)
#   scripts/test.sh --sanitize [CMAKE_ARGS...]   the same suite built with AddressSanitizer +
#       UndefinedBehaviorSanitizer (CLLM_SANITIZE) in build-asan/, CPU paths only (the GPU code
#       is checked with compute-sanitizer instead); any finding fails the test that hit it.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitize=0
if [ "${1:-}" = "--sanitize" ]; then
  sanitize=1
  shift
fi
scripts/setup.sh
if [ "$sanitize" = 1 ]; then
  export CLLM_BUILD_DIR=${CLLM_BUILD_DIR:-build-asan}
  set -- -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCLLM_SANITIZE=ON -DCLLM_CUDA=OFF "$@"
  # Leaks count as findings; the first UB report stops the process (-fno-sanitize-recover).
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
fi
scripts/build.sh "$@"
cd "${CLLM_BUILD_DIR:-build}"
ctest --output-on-failure -j"$(nproc)" --timeout 900
