#!/usr/bin/env bash
# On a machine with a CUDA GPU: runs the GPU tests and the benchmarks, writing every log to
# OUT_DIR (the device tool brings that folder back). Uses the bundle from
# scripts/bundle-gpu.sh (that machine has no compilers' dependencies and no internet).
#   scripts/gpu-check.sh OUT_DIR [tests|sanitize|smoke|bench|all]
#     tests:    every test executable (GPU tests included) -> tests.log
#     sanitize: compute-sanitizer memcheck, racecheck, synccheck on the GPU tests -> sanitize.log
#     smoke:    `run` in each mode on a synthetic TinyLlama -> smoke.log
#     bench:    synth + compress + benchmarks of TinyLlama-1.1B and Llama-3.1-8B shapes -> bench.log
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR [tests|sanitize|smoke|bench|all]}
what=${2:-all}
cd "$(dirname "$0")/.."
bundle=$PWD/.device/bundle
# cuBLAS comes from the machine's CUDA 13 (the toolkit, or the nvidia-cublas wheel).
cublas_dirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
  [ -e "$d/libcublas.so.13" ] && cublas_dirs="$cublas_dirs:$d"
done
export LD_LIBRARY_PATH="$bundle/lib$cublas_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
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

if [ "$what" = sanitize ] || [ "$what" = all ]; then
  : > "$out/sanitize.log"
  # Small cases (stories260K, tiny-test), each tool on the engine and the decoder.
  for tool in memcheck racecheck synccheck; do
    for t in "test-gpu-engine:gpu: full, resident and lowmem give bitwise-identical logits at every token" \
             "test-gpu-engine:gpu: prompts longer than a batch, and every row's logits" \
             "test-gpu-decoder:"; do
      exe=${t%%:*} filter=${t#*:}
      echo "===== $tool $exe $filter" >> "$out/sanitize.log"
      if timeout 900 compute-sanitizer --tool "$tool" --error-exitcode 99 "$bundle/tests/$exe" ${filter:+"$filter"} \
           >> "$out/sanitize.log" 2>&1; then echo "CLEAN $tool $exe $filter"
      else echo "FAIL $tool $exe $filter (see sanitize.log)"; status=1; fi
    done
  done
fi

if [ "$what" = smoke ] || [ "$what" = all ]; then
  src="$work/tinyllama" model="$work/tinyllama.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset tinyllama-1.1b 2>&1 | tail -1
  [ -f "$model" ] || "$bin" --quiet compress "$src" "$model" 2>&1 | tail -2
  for mode in full resident lowmem auto; do
    echo "===== run --mode $mode"
    "$bin" run "$model" --mode "$mode" -p "Once upon a time" -n 64 --no-verify 2>&1 | grep -E "codecllm:|device:|^#|error"
  done 2>&1 | tee "$out/smoke.log"
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
