#!/usr/bin/env bash
# On a machine with a CUDA GPU: runs the GPU tests and the benchmarks, writing every log to
# OUT_DIR (the device tool brings that folder back). Uses the bundle from
# scripts/bundle-gpu.sh (that machine has no compilers' dependencies and no internet).
#   scripts/gpu-check.sh OUT_DIR [tests|bench|all]
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR [tests|bench|all]}
what=${2:-all}
cd "$(dirname "$0")/.."
bundle=$PWD/.device/bundle
export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CLLM_SHARED_MODELS="$bundle/shared"
export CLLM_BINARY="$bundle/bin/codecllm"  # the tests run the CLI from the bundle
bin=$CLLM_BINARY
mkdir -p "$out"
work=${CLLM_WORK:-/tmp/cllm-gpu-check}
mkdir -p "$work"
status=0

{
  date -u; git rev-parse --short HEAD 2>/dev/null || true
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  lscpu | grep -E 'Model name|^CPU\(s\)'; free -g | head -2
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

if [ "$what" = tests ] || [ "$what" = all ]; then
  : > "$out/tests.log"
  for t in "$bundle"/tests/test-*; do
    name=$(basename "$t")
    echo "===== $name" >> "$out/tests.log"
    if "$t" >> "$out/tests.log" 2>&1; then echo "PASS $name ($(grep -E 'passed|SKIPPED' "$out/tests.log" | tail -1))"
    else echo "FAIL $name (see tests.log)"; status=1; fi
  done
fi

bench_model() {  # preset layers tag
  local preset=$1 layers=$2 tag=$3
  local src="$work/$tag" model="$work/$tag.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset "$preset" ${layers:+--layers $layers} 2>&1 | tail -1
  /usr/bin/time -f "compress wall %e s, max RSS %M KB" "$bin" compress "$src" "$model" --force 2>&1 | tail -5
  "$bin" bench --codec "$model" -r 5 -o md 2>&1
}
if [ "$what" = bench ] || [ "$what" = all ]; then
  {
    echo "## tinyllama-1.1b"; bench_model tinyllama-1.1b "" tinyllama
    echo "## llama3.1-8b"; bench_model llama3.1-8b "" llama31-8b
  } 2>&1 | tee "$out/bench.log"
fi
exit $status
