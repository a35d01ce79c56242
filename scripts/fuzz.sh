#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, ASan and UBSan in build-fuzz/, writes
# their seed corpus, and runs each target for a bounded time, one after the other.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 60 (what CI runs); TARGET is any of cllm safetensors gguf
# llama2c tokenizer bpe (default: all). CLLM_FUZZ_RUNS=N stops each target after N executions
# instead (SECONDS_PER_TARGET still bounds it): the documented long run is
# `CLLM_FUZZ_RUNS=10000000 scripts/fuzz.sh 21600 TARGET`. New interesting inputs accumulate in
# build-fuzz/fuzz-corpus/<target>/; a crash leaves its input in build-fuzz/fuzz-artifacts/ and
# makes the script fail: add that input to tests/fuzz/regressions/<target>/ with the fix
# (docs/robustness.md). The last line per target gives executions and the result.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
[ $# -gt 0 ] && shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(cllm safetensors gguf llama2c tokenizer bpe)
build=${CLLM_FUZZ_BUILD_DIR:-build-fuzz}
shared=${CLLM_SHARED_MODELS:-$(cd .. && pwd)/shared/models}

scripts/setup.sh
missing=()
for p in clang libclang-rt-dev; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DCLLM_FUZZ=ON -DCLLM_TESTS=OFF -DCLLM_CUDA=OFF >"$build/configure.log" 2>&1 || { cat "$build/configure.log" >&2; exit 1; }
cmake --build "$build" -j"$(nproc)" --target fuzz_make_seeds "${targets[@]/#/fuzz_}" >"$build/build.log" 2>&1 ||
  { tail -40 "$build/build.log" >&2; exit 1; }

rm -rf "$build/fuzz-seeds"
"$build/tests/fuzz/fuzz_make_seeds" "$build/fuzz-seeds" "$([ -d "$shared" ] && echo "$shared")"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
failed=0
for t in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$t"
  mkdir -p "$corpus"
  dirs=("$corpus" "$build/fuzz-seeds/$t")
  [ -d "tests/fuzz/regressions/$t" ] && dirs+=("tests/fuzz/regressions/$t")
  log="$build/fuzz-logs/$t.log"
  # -max_len: the seeds are at most a few tens of KB; -timeout: one input may take 10 s at most;
  # -rss_limit_mb / -malloc_limit_mb: a reader asking for more than 2 GB is a finding.
  status=0
  runs_flag=()
  [ -n "${CLLM_FUZZ_RUNS:-}" ] && runs_flag=(-runs="$CLLM_FUZZ_RUNS")
  t0=$SECONDS
  "$build/tests/fuzz/fuzz_$t" "${runs_flag[@]}" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$build/fuzz-artifacts/$t-" "${dirs[@]}" \
    >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  if [ "$status" -eq 0 ]; then
    echo "fuzz $t: ${runs:-?} executions in $((SECONDS - t0)) s (${rate:-?}/s), no crash"
  else
    failed=1
    echo "fuzz $t: FAILED (status $status) after ${runs:-?} executions; log: $log" >&2
    grep -E "^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written)" "$log" | head -20 >&2 || true
  fi
done
exit $failed
