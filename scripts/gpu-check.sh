#!/usr/bin/env bash
# On a machine with a CUDA GPU: runs the GPU tests and the benchmarks, writing every log to
# OUT_DIR (the device tool brings that folder back). Uses the bundle from
# scripts/bundle-gpu.sh (that machine has no compilers' dependencies and no internet).
#   scripts/gpu-check.sh OUT_DIR [tests|sanitize|smoke|bench|budget|hybrid|compare|ttft|profile|breakdown|cpu|fuzz|all]
#     tests:    every test executable (GPU tests included) -> tests.log
#     sanitize: compute-sanitizer memcheck, racecheck, synccheck on every case of the GPU tests
#               (SANITIZE_TOOLS, SANITIZE_ONLY, SANITIZE_JOBS in parallel, SANITIZE_TIMEOUT per case)
#               -> sanitize-summary.txt, sanitize.log
#     smoke:    `run` in each mode on a synthetic TinyLlama -> smoke.log
#     bench:    synth + compress + benchmarks of TinyLlama-1.1B and Llama-3.1-8B shapes -> bench.log
#     compare:  Hugging Face transformers and accelerate offload on the same models -> hf-*.json
#     ttft:     time to first token of the 8B in lowmem at 4096 context -> ttft.log
#     profile:  Nsight Compute on the decoding kernels of the 8B in full mode -> profile.log
#     breakdown: kernel time of a 512-token prompt pass and of a token, by kind of kernel, the 8B
#               in full mode (ncu) -> breakdown.log
#     budget:   issue 8's curve: the 8B at VRAM budgets from 2.5G to all of it (BUDGETS, BUDGET_REPS)
#               -> bench-budget.json, budget-curve.png, budget.log
#     hybrid:   `run` of the 8B at HYBRID_BUDGET (2.5G) with each of HYBRID_THREADS (16,12,8): the CPU
#               layers' time per layer against the whole token -> hybrid.log
#     hashes:   greedy `run` in every mode (and a VRAM budget) on stories260K and the 8B: the `#` line's
#               logits hash, for this binary and each of OTHER_BINS (paths): a refactor keeps them -> hashes.log
#     depth:    issue 15's table: bench -d DEPTHS (0,4096,16384,32768) for each of DEPTH_MODES and the
#               2.5G budget on the 8B, and llama.cpp's batched-bench beside it when PEER_DIR holds a
#               build (llamacpp.sh) -> depth-*.json, depth.log
#     parallel: issue 18's batched decoding on the 8B: bench --parallel PARALLEL (1,16) in full mode at depths
#               PARALLEL_DEPTH (0), and llama.cpp's batched-bench -npl beside it when PEER_DIR holds a build -> parallel.log
#     serve:    issue 18's server under load on the 8B: SERVE_SLOTS (16) concurrent greedy requests of 128
#               tokens, then SERVE_CLIENTS (64) streaming clients for SERVE_SECONDS (60), codecllm serve and
#               (with PEER_DIR) llama-server with the same slots, one after the other -> serve.log, serve-*.json
#     multi:    issue 18's multi-model case: MULTI_MODELS (15) copies of the 8B served at once in
#               MULTI_MODE (resident) or sharing MULTI_BUDGET (--vram-budget): how many stay in VRAM, each one's first request timed, the
#               parked ones loaded again from host RAM -> multi.log
#     fused:    issue 17's table on the 8B: bench-gpu-fused (the products and the prompt decoder alone),
#               full and fused at FUSED_DEPTHS (0,4096), hybrids of fused layers at FUSED_BUDGETS (11G),
#               llama-bench BF16 without and with -fa (at depth 0: c392e50's llama-bench has no -d) when
#               PEER_DIR holds a build and the GGUF exists; with FUSED_70B set and a card over 100 GiB,
#               the 70B-shaped model (synth straight to /dev/shm) fused and at VRAM budgets
#               FUSED_70B_BUDGETS (100G 84G) -> fused.log
#     attention: the attention micro-benchmark (bench-gpu-attention: pp512 @ d4096 alone, then all), then with PREFILL_VARIANTS (e.g.
#               "0 9 11 12 13 14") the 8B in full mode at depths 0 and 4096 under each prompt variant
#               -> attention.log
#     cpu:      the CPU kernels against the host's memory read bandwidth (bench-cpu-kernels) -> cpu.log
#     fuzz:     the long fuzz run on this machine's cores (bundle-gpu.sh packs the targets):
#               FUZZ_RUNS executions (10M) per target in FUZZ_TARGETS, split over FUZZ_JOBS
#               processes with their own seeds, at most FUZZ_SECONDS each -> fuzz.log
set -uo pipefail
out=${1:?usage: scripts/gpu-check.sh OUT_DIR [tests|sanitize|smoke|bench|budget|hybrid|compare|ttft|profile|breakdown|hashes|depth|parallel|fused|serve|multi|attention|cpu|fuzz|all]}
what=${2:-all}
cd "$(dirname "$0")/.."
bundle=$PWD/.device/bundle
# The bundle travels as one archive (scripts/bundle-gpu.sh); unpacked when it is newer.
# Python's tarfile reads xz where the machine lacks the xz tool.
if [ -f .device/bundle.tar.xz ] && [ .device/bundle.tar.xz -nt "$bundle/.unpacked" ]; then
  rm -rf "$bundle" && python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    .device/bundle.tar.xz .device && touch "$bundle/.unpacked"
fi
# cuBLAS comes from the machine's CUDA 13 (the toolkit, or the nvidia-cublas wheel).
cublas_dirs=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         $(python3 -c 'import nvidia.cublas, os; print(os.path.dirname(nvidia.cublas.__file__) + "/lib")' 2>/dev/null); do
  [ -e "$d/libcublas.so.13" ] && cublas_dirs="$cublas_dirs:$d"
done
export LD_LIBRARY_PATH="$bundle/lib$cublas_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CLLM_SHARED_MODELS="$bundle/shared"
export CLLM_BINARY="$bundle/bin/codecllm"  # the tests run the CLI from the bundle
export CLLM_SOURCE_DIR="$bundle"             # and read tests/fixtures and scripts/ there (bundle-gpu.sh)
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
  # Every test case of the GPU test executables under memcheck, racecheck and synccheck, one
  # process per (tool, case), SANITIZE_JOBS at a time (racecheck is slow: minutes a case).
  # SANITIZE_TOOLS picks the tools; SANITIZE_TIMEOUT bounds each case.
  # Catch2 reads a comma as "or", so a case is named by its text up to the first comma and '*'.
  sanitize_case() {  # "tool exe index name" -> one line: CLEAN or FAIL
    local tool=$1 exe=$2 i=$3 name=$4 filter log
    filter="${name%%,*}"; [ "$filter" = "$name" ] || filter="$filter*"
    log="$out/sanitize-cases/$tool-$exe-$i.log"
    timeout "${SANITIZE_TIMEOUT:-900}" compute-sanitizer --tool "$tool" --target-processes all --error-exitcode 99 \
      "$bundle/tests/$exe" "$filter" > "$log" 2>&1
    local code=$? sums
    # Clean: the tests passed, and every process's summary (children included) reports nothing.
    sums=$(grep -E "(ERROR|RACECHECK) SUMMARY" "$log")
    if [ $code -eq 0 ] && [ -n "$sums" ] && \
       ! grep -vqE "ERROR SUMMARY: 0 errors|RACECHECK SUMMARY: 0 hazards displayed \(0 errors, 0 warnings\)" <<< "$sums"
    then echo "CLEAN $tool $exe: $name ($(wc -l <<< "$sums") processes)"
    else echo "FAIL ($code) $tool $exe: $name (see sanitize.log)"; fi
  }
  export -f sanitize_case
  export out bundle
  mkdir -p "$out/sanitize-cases"
  # Cases that measure the device's free memory cannot share the GPU with the others: they run
  # alone, after them. SANITIZE_ONLY (a regex on the case names) picks a subset.
  alone="reports its memory"
  cases() {  # sharing|alone -> "tool\nexe\nindex\nname\n" for each case
    for tool in ${SANITIZE_TOOLS:-memcheck racecheck synccheck}; do
      for exe in test-gpu-decoder test-gpu-engine test-gpu-kernels test-gpu-attention; do
        [ -x "$bundle/tests/$exe" ] || continue  # (a bundle built before the test existed)
        "$bundle/tests/$exe" --list-test-names-only | grep -v '^$' | awk -v t="$tool" -v e="$exe" '{print t; print e; print NR; print}'
      done
    done | paste - - - - | grep -E -- "${SANITIZE_ONLY:-.}" | \
      if [ "$1" = alone ]; then grep -F -- "$alone"; else grep -vF -- "$alone"; fi | tr '\t' '\n'
  }
  # (The pause lets a process killed by the timeout give its device memory back first.)
  { cases sharing | tr '\n' '\0' | xargs -0 -r -n 4 -P "${SANITIZE_JOBS:-8}" bash -c 'sanitize_case "$@"' _
    sleep 10
    cases alone | tr '\n' '\0' | xargs -0 -r -n 4 -P 1 bash -c 'sanitize_case "$@"' _; } > "$out/sanitize-summary.txt"
  sort "$out/sanitize-summary.txt" | tee "$out/sanitize-summary.sorted"
  grep -q "^FAIL" "$out/sanitize-summary.txt" && status=1
  # One log back instead of one file per case (the device tool returns few files).
  for f in "$out"/sanitize-cases/*.log; do echo "===== $(basename "$f" .log)"; cat "$f"; done > "$out/sanitize.log"
  mv "$out/sanitize-summary.sorted" "$out/sanitize-summary.txt"
  rm -rf "$out/sanitize-cases"
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

bench_model() {  # preset tag [codec]
  local preset=$1 tag=$2 codec=${3:-}
  local src="$work/$tag" model="$work/$tag.cllm"
  [ -f "$src/config.json" ] || /usr/bin/time -f "synth wall %e s" "$bin" --quiet synth "$src" --preset "$preset" 2>&1 | tail -2
  [ -f "$model" ] || /usr/bin/time -f "compress wall %e s, max RSS %M KB" "$bin" compress "$src" "$model" --force 2>&1 | tail -5
  [ -n "$codec" ] && "$bin" bench --codec "$model" -r 5 -o md 2>&1
  "$bin" bench "$model" --mode "${BENCH_MODES:-full,resident,lowmem}" -p 512 -n 128 -r 3 -o json \
    > "$out/bench-$tag.json" 2> "$out/bench-$tag.err" || { cat "$out/bench-$tag.err"; status=1; }
  python3 scripts/bench-report.py "$out/bench-$tag.json"
  [ -n "${BENCH_QUICK:-}" ] && return
  echo "lowmem at a 4096-token context:"
  "$bin" run "$model" --mode lowmem -c 4096 -p "Once upon a time" -n 8 --no-verify 2>&1 | grep -E "device:|VRAM peak|load time|prompt eval"
}
if [ "$what" = profile ]; then
  model="$work/llama31-8b.cllm"
  [ -f "$model" ] || bench_model llama3.1-8b llama31-8b > /dev/null
  for k in matvec "attention|rmsnorm|rope_store"; do
    ncu -k "regex:$k" --launch-skip 64 --launch-count 8 --section SpeedOfLight \
      "$bin" run "$model" --mode full -p "Once upon a time" -n 16 --no-verify 2>&1 \
      | grep -E "^  [a-z_]|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Grid Size|Block Size"
  done 2>&1 | tee "$out/profile.log"
fi

if [ "$what" = breakdown ]; then
  # Kernel time of one prompt pass (512 tokens) and one token, full mode, the 8B: what bounds
  # pp512 and tg128 against their ceilings (kernels serialised by ncu, so no overlap is counted).
  src="$work/llama31-8b" model="$work/llama31-8b.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset llama3.1-8b 2>&1 | tail -1
  [ -f "$model" ] || "$bin" --quiet compress "$src" "$model" 2>&1 | tail -1
  for t in "pp512:-p 512 -n 0" "tg:-p 0 -n 4"; do
    # bench: the ceilings, then a warm-up and one timed repetition (kernel-breakdown.py counts
    # the passes and leaves the ceilings and loading out).
    ncu --csv --metrics gpu__time_duration.sum "$bin" bench "$model" --mode full ${t#*:} -r 1 -o csv \
      > "$out/breakdown-${t%%:*}.csv" 2> "$out/breakdown-${t%%:*}.err"
    echo "### ${t%%:*} (full mode, kernel time per pass)"
    python3 scripts/kernel-breakdown.py "$out/breakdown-${t%%:*}.csv" || status=1
  done 2>&1 | tee "$out/breakdown.log"
fi

if [ "$what" = compare ] || [ "$what" = all ]; then
  # Hugging Face transformers and accelerate's cpu_offload on the same synthetic models.
  for preset in tinyllama-1.1b:tinyllama llama3.1-8b:llama31-8b; do
    tag=${preset#*:} src="$work/${preset#*:}"
    [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset "${preset%%:*}" 2>&1 | tail -1
    python3 scripts/compare-hf.py "$src" > "$out/hf-$tag.json" || status=1
  done 2>&1 | tee "$out/compare.log"
fi

if [ "$what" = ttft ] || [ "$what" = all ]; then
  # Time to first token of the 8B in lowmem at a 4096-token context, from a warm page cache.
  src="$work/llama31-8b" model="$work/llama31-8b.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset llama3.1-8b 2>&1 | tail -1
  [ -f "$model" ] || "$bin" --quiet compress "$src" "$model" 2>&1 | tail -1
  cat "$model" > /dev/null
  for i in 1 2; do
    /usr/bin/time -f "wall %e s (process start to exit, 1 token generated)" "$bin" run "$model" --mode lowmem \
      -c 4096 -p "Once upon a time" -n 1 --no-verify 2>&1 | grep -E "VRAM peak|load time|prompt eval|wall"
  done 2>&1 | tee "$out/ttft.log"
fi

if [ "$what" = budget ] || [ "$what" = all ]; then
  src="$work/llama31-8b" model="$work/llama31-8b.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset llama3.1-8b 2>&1 | tail -1
  [ -f "$model" ] || "$bin" --quiet compress "$src" "$model" 2>&1 | tail -1
  {
    lscpu | grep -E 'Model name|^CPU\(s\)'
    "$bin" bench "$model" --vram-budget "${BUDGETS:-2.5G,4G,6G,8G,10G,12G,14G,auto}" -p 512 -n 128 \
      -r "${BUDGET_REPS:-2}" -o json > "$out/bench-budget.json" 2> "$out/bench-budget.err" || { cat "$out/bench-budget.err"; status=1; }
    grep -E "plan:" "$out/bench-budget.err"
    python3 scripts/bench-report.py --budget-plot "$out/budget-curve.png" "$out/bench-budget.json"
  } 2>&1 | tee "$out/budget.log"
fi

if [ "$what" = hybrid ]; then
  src="$work/llama31-8b" model="$work/llama31-8b.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset llama3.1-8b 2>&1 | tail -1
  [ -f "$model" ] || "$bin" --quiet compress "$src" "$model" 2>&1 | tail -1
  {
    echo "transparent huge pages: $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null)"
    for t in ${HYBRID_THREADS:-16 12 8}; do
      echo "===== -t $t${CLLM_POOL_SPIN_US:+ (pool spin $CLLM_POOL_SPIN_US us)}"
      "$bin" run "$model" --vram-budget "${HYBRID_BUDGET:-2.5G}" -t "$t" -p "Once upon a time" -n 48 --no-verify 2>&1 \
        | grep -E "plan:|calibrated|eval time|CPU layers|weight stalls|host->device|decode time|error"
    done
  } 2>&1 | tee -a "$out/hybrid.log"
fi

model_8b() {  # synth + compress the 8B once per machine; prints the .cllm path
  local src="$work/llama31-8b" model="$work/llama31-8b.cllm"
  [ -f "$src/config.json" ] || "$bin" --quiet synth "$src" --preset llama3.1-8b >&2
  [ -f "$model" ] || "$bin" --quiet compress "$src" "$model" >&2
  echo "$model"
}

if [ "$what" = hashes ]; then
  # Each line: model, flags, and `run`'s # line (tok/s and the final logits' hash). The modes
  # must agree bit for bit, at depth too (a prompt of about 4000 tokens on the 8B's synthetic tokenizer: 330 lines made 9465), and with HASH_BUDGET_8B a
  # hybrid plan without CPU layers; plans with CPU layers differ within tolerance.
  stories="$work/stories260K.cllm"
  [ -f "$stories" ] || "$bin" --quiet compress "$bundle/shared/stories260K.bin" "$stories" \
    --tokenizer "$bundle/shared/tok512.model" --force 2>&1 | tail -1
  m8=$(model_8b)
  long="$work/prompt-4k.txt"
  [ -f "$long" ] || for i in $(seq 1 140); do echo "The quick brown fox jumps over the lazy dog, line $i."; done > "$long"
  for b in "$bin" ${OTHER_BINS:-}; do
    echo "===== $b"
    for m in "$stories:2G:-p Once" "$m8:${HASH_BUDGET_8B:-12G}:-p Once" "$m8:${HASH_BUDGET_8B:-12G}:-c 8192 -f $long"; do
      IFS=: read -r model budget prompt <<< "$m"
      # Other binaries: stories260K only, unless HASH_OTHERS_8B is set (the 8B takes minutes).
      [ "$b" != "$bin" ] && [ "$model" = "$m8" ] && [ -z "${HASH_OTHERS_8B:-}" ] && continue
      for flags in "--mode full" "--mode resident" "--mode lowmem" "--vram-budget $budget"; do
        printf '%-18s %-24s %-22s ' "$(basename "$model")" "${prompt:0:24}" "$flags"
        "$b" run "$model" $flags $prompt -n 32 --temp 0 --no-verify 2>&1 | grep -E "^# |error" | tr -d '\n'
        echo
      done
    done
  done 2>&1 | tee "$out/hashes.log"
fi

if [ "$what" = parallel ]; then
  m8=$(model_8b)
  {
    # PARALLEL_DEPTH (0): tests after that many tokens in every sequence; the peer's prompt per sequence is that depth.
    depths=${PARALLEL_DEPTH:-0}
    "$bin" bench "$m8" --mode "${PARALLEL_MODE:-full}" --parallel "${PARALLEL:-1,16}" -p 128 -n 128 -d "$depths" -r 2 2>&1
    peer=${PEER_DIR:-}/build/bin/llama-batched-bench
    if [ -n "${PEER_DIR:-}" ] && [ -x "$peer" ] && [ -f "$work/llama31-8b.gguf" ]; then
      max_d=$(tr , '\n' <<< "$depths" | sort -n | tail -1) max_np=$(tr , '\n' <<< "${PARALLEL:-1,16}" | sort -n | tail -1)
      echo "### llama.cpp batched-bench -fa (S_PP: prompt t/s, S_TG: decode t/s of all sequences together)"
      "$peer" -m "$work/llama31-8b.gguf" -c $(( max_np * (max_d + 384) )) -ngl 99 -fa -npp "${depths/#0/128}" -ntg 128 \
        -npl "${PARALLEL:-1,16}" 2>&1 | grep -E "^\|"
    fi
  } 2>&1 | tee "$out/parallel.log"
fi

if [ "$what" = fused ]; then
  m8=$(model_8b)
  depths=${FUSED_DEPTHS:-0,4096}
  {
    "$bundle/tests/bench-gpu-fused" --reps 10 --tokens 1,8
    "$bin" bench "$m8" --mode full,fused -p 512 -n 128 -d "$depths" -r 2 -o md
    for b in ${FUSED_BUDGETS:-11G}; do
      "$bin" bench "$m8" --vram-budget "$b" -p 512 -n 128 -r 2 -o md
    done
    peer=${PEER_DIR:-}/build/bin/llama-bench
    if [ -n "${PEER_DIR:-}" ] && [ -x "$peer" ] && [ -f "$work/llama31-8b.gguf" ]; then
      echo "### llama.cpp llama-bench, BF16, all layers on the GPU, without and with flash attention"
      "$peer" -m "$work/llama31-8b.gguf" -ngl 99 -fa 0,1 -p 512 -n 128 -r 3 2>&1 | grep -E "^\|"
    fi
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    if [ -n "${FUSED_70B:-}" ] && (( mib > 100000 )); then
      # The container (93 GB) lives in /dev/shm: the 64 GiB disk cannot hold it; host RAM then
      # limits how many steps a budget can stream.
      m70=/dev/shm/l70.cllm
      [ -f "$m70" ] || "$bin" --quiet synth "$m70" --preset llama3.1-70b
      "$bin" bench "$m70" --mode fused -p 512 -n 128 -r 1 -o md
      for b in ${FUSED_70B_BUDGETS:-100G 84G}; do
        "$bin" bench "$m70" --vram-budget "$b" -p 512 -n 32 -r 1 -o md
      done
    fi
  } 2>&1 | tee "$out/fused.log"
fi

wait_ready() {  # port pid: until the server answers /health (0), or its process ends (1)
  for _ in $(seq 1 900); do
    python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
      "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}
vram_used() { nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader; }

if [ "$what" = serve ]; then
  m8=$(model_8b)
  slots=${SERVE_SLOTS:-16} clients=${SERVE_CLIENTS:-64} seconds=${SERVE_SECONDS:-60}
  serve_load() {  # name port: the two loads against the server listening on port
    python3 scripts/serve-load.py "http://127.0.0.1:$2" --model llama31-8b --clients "$slots" --requests 1 \
      --max-tokens 128 --label "$1 $slots x 128" --json "$out/serve-$1-burst.json"
    python3 scripts/serve-load.py "http://127.0.0.1:$2" --model llama31-8b --clients "$clients" --seconds "$seconds" \
      --max-tokens 128 --label "$1 $clients clients ${seconds} s" --json "$out/serve-$1-load.json"
  }
  {
    "$bin" serve -m "$m8" --port 8181 -np "$slots" -c $((slots * 1024)) --max-queue "$clients" --mode "${SERVE_MODE:-full}" \
      > "$out/serve-codecllm.err" 2>&1 &
    pid=$!
    if wait_ready 8181 $pid; then
      echo "### codecllm serve -np $slots (VRAM used, total: $(vram_used))"; serve_load codecllm 8181
      python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
        "http://127.0.0.1:8181/metrics" | grep -E "^codecllm_(requests|completion_tokens|prompt_tokens)_total" | head -12
    else echo "codecllm serve did not start:"; tail -5 "$out/serve-codecllm.err"; status=1; fi
    kill -TERM $pid; wait $pid; echo "codecllm serve exit status $?"
    peer=${PEER_DIR:-}/build/bin/llama-server
    if [ -n "${PEER_DIR:-}" ] && [ -x "$peer" ] && [ -f "$work/llama31-8b.gguf" ]; then
      "$peer" -m "$work/llama31-8b.gguf" --port 8182 -np "$slots" -c $((slots * 1024)) -ngl 99 -fa --alias llama31-8b \
        > "$out/serve-llama-server.err" 2>&1 &
      pid=$!
      if wait_ready 8182 $pid; then echo "### llama-server -np $slots -fa (VRAM used, total: $(vram_used))"; serve_load llama-server 8182
      else echo "llama-server did not start:"; tail -5 "$out/serve-llama-server.err"; fi
      kill -TERM $pid; wait $pid
    fi
  } 2>&1 | tee "$out/serve.log"
fi

if [ "$what" = multi ]; then
  # Issue 18's multi-model case: MULTI_MODELS (15) copies of the 8B (links to one file, each its
  # own model id) served at once in MULTI_MODE (resident), one slot of 1024 positions each. Those
  # that do not fit park the least recently used ones at start; then one request (16 greedy
  # tokens) to each, those in VRAM first, then the parked ones (each loads again from host RAM,
  # parking another), timed.
  m8=$(model_8b)
  n=${MULTI_MODELS:-15}
  rm -rf "$work/multi" && mkdir -p "$work/multi"
  args=()
  for i in $(seq 1 "$n"); do ln -s "$m8" "$work/multi/llama8b-$i.cllm"; args+=(-m "$work/multi/llama8b-$i.cllm"); done
  {
    t0=$(date +%s)
    # MULTI_BUDGET (a size): the models share that --vram-budget instead of each taking MULTI_MODE.
    placement=(--mode "${MULTI_MODE:-resident}"); [ -n "${MULTI_BUDGET:-}" ] && placement=(--vram-budget "$MULTI_BUDGET")
    "$bin" serve "${args[@]}" --port 8183 -np 1 -c 1024 "${placement[@]}" > "$out/multi.err" 2>&1 &
    pid=$!
    if wait_ready 8183 $pid; then
      echo "### $n models of $(basename "$m8") with ${placement[*]}: listening after $(( $(date +%s) - t0 )) s; VRAM used, total: $(vram_used)"
      python3 - <<'PY'
import json, time, urllib.request
base = "http://127.0.0.1:8183"
def models():
    return {m["id"]: m["meta"] for m in json.load(urllib.request.urlopen(base + "/v1/models"))["data"]}
m = models()
loaded = [k for k, v in m.items() if v["status"] == "loaded"]
parked = [k for k, v in m.items() if v["status"] != "loaded"]
print(f"after start: {len(loaded)} loaded ({', '.join(loaded)}), {len(parked)} parked ({', '.join(parked)})")
for mid in loaded + parked:
    was = models()[mid]["status"]
    body = json.dumps({"model": mid, "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0,
                       "ignore_eos": True}).encode()
    t = time.perf_counter()
    r = json.load(urllib.request.urlopen(urllib.request.Request(base + "/v1/completions", body,
                                                                {"Content-Type": "application/json"}), timeout=300))
    took = time.perf_counter() - t
    meta = models()[mid]
    print(f"{mid} ({was}): first request {took:.3f} s, {r['usage']['completion_tokens']} tokens; "
          f"last load {meta['last_load_s']:.3f} s; now {meta['status']}")
print("loaded at the end:", sum(1 for v in models().values() if v["status"] == "loaded"))
PY
      grep -E "parked|loaded again|did not fit|planned for|device: " "$out/multi.err" | head -16
      kill -TERM $pid; wait $pid; echo "serve exit status $?"
    else echo "serve did not start: $(tail -3 "$out/multi.err")"; status=1; fi
  } 2>&1 | tee "$out/multi.log"
fi

if [ "$what" = attention ]; then
  {
    # pp512 @ d4096 alone first: a variant that fails or traps shows before the long table
    timeout 60 "$bundle/tests/bench-gpu-attention" --prompt 512@4096 --reps 10 || status=1
    "$bundle/tests/bench-gpu-attention" --reps 10
    # the engine at depth under each prompt variant (the kernel alone misses what the layer adds)
    if [ -n "${PREFILL_VARIANTS:-}" ]; then
      m8=$(model_8b)
      for v in $PREFILL_VARIANTS; do
        echo "### CLLM_PREFILL_VARIANT=$v: full mode, pp512 and tg32 at depths 0 and 4096"
        CLLM_PREFILL_VARIANT=$v "$bin" bench "$m8" --mode full -d 0,4096 -p 512 -n 32 -r 2 -o md 2>&1 |
          grep -E "^\|.*(pp|tg)" || status=1
      done
    fi
  } 2>&1 | tee "$out/attention.log"
fi

if [ "$what" = depth ]; then
  m8=$(model_8b)
  depths=${DEPTHS:-0,4096,16384,32768}
  {
    for mode in ${DEPTH_MODES:-full resident lowmem}; do
      reps=2; [ "$mode" = lowmem ] && reps=1
      "$bin" bench "$m8" --mode "$mode" -d "$depths" -p 512 -n "${DEPTH_GEN:-128}" -r "$reps" -o json > "$out/depth-$mode.json" \
        2> "$out/depth-$mode.err" || { tail -3 "$out/depth-$mode.err"; status=1; }
      python3 scripts/bench-report.py "$out/depth-$mode.json"
    done
    if [ -n "${DEPTH_BUDGET-2.5G}" ]; then
      "$bin" bench "$m8" --vram-budget "${DEPTH_BUDGET:-2.5G}" -d "$depths" -p 512 -n "${DEPTH_GEN:-128}" -r 1 -o json \
        > "$out/depth-budget.json" 2> "$out/depth-budget.err" || { tail -3 "$out/depth-budget.err"; status=1; }
      grep -E "plan:" "$out/depth-budget.err"
      python3 scripts/bench-report.py "$out/depth-budget.json"
    fi
    peer=${PEER_DIR:-}/build/bin/llama-batched-bench
    if [ -n "${PEER_DIR:-}" ] && [ -x "$peer" ] && [ -f "$work/llama31-8b.gguf" ]; then
      npp=$(echo "$depths" | tr ',' '\n' | awk '$1 > 0' | paste -sd, -)
      for fa in "" "-fa"; do
        echo "### llama.cpp batched-bench $fa (S_PP: prompt t/s, S_TG: decode t/s after the prompt)"
        "$peer" -m "$work/llama31-8b.gguf" -c 34000 -ngl 99 $fa -npp "512,$npp" -ntg 128 -npl 1 2>&1 | grep -E "^\|"
      done
    fi
  } 2>&1 | tee "$out/depth.log"
fi

if [ "$what" = cpu ]; then
  "$bundle/tests/bench-cpu-kernels" --threads "${CPU_THREADS:-8,16}" --batches 1,4,16 --seconds 0.3 2>&1 | tee "$out/cpu.log"
fi

if [ "$what" = fuzz ]; then
  fz=$bundle/fuzz runs=${FUZZ_RUNS:-10000000} jobs=${FUZZ_JOBS:-$(nproc)}
  per_job=$(( (runs + jobs - 1) / jobs ))
  export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  mkdir -p "$out/fuzz-logs" "$out/fuzz-artifacts"
  pids=()
  for t in ${FUZZ_TARGETS:-cllm gguf}; do
    # Each process: its own seed and corpus folder, the shared seeds and regressions read-only.
    for j in $(seq 1 "$jobs"); do
      mkdir -p "$work/fuzz-corpus/$t-$j"
      "$fz/fuzz_$t" -runs="$per_job" -seed="$j" -max_total_time="${FUZZ_SECONDS:-540}" -max_len=65536 -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$out/fuzz-artifacts/$t-" \
        "$work/fuzz-corpus/$t-$j" "$fz/seeds/$t" $([ -d "$fz/regressions/$t" ] && echo "$fz/regressions/$t") \
        > "$out/fuzz-logs/$t-$j.log" 2>&1 &
      pids+=($!)
    done
  done
  failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
  for t in ${FUZZ_TARGETS:-cllm gguf}; do
    total=$(cat "$out"/fuzz-logs/"$t"-*.log | sed -n 's/^stat::number_of_executed_units: *//p' | awk '{s += $1} END {print s}')
    echo "fuzz $t: $total executions in $jobs processes"
  done | tee "$out/fuzz.log"
  echo "processes that failed: $failed (artifacts: $(ls "$out/fuzz-artifacts" | wc -l))" | tee -a "$out/fuzz.log"
  [ "$failed" -eq 0 ] || status=1
fi

if [ "$what" = bench ] || [ "$what" = all ]; then
  {
    echo "## tinyllama-1.1b"; bench_model tinyllama-1.1b tinyllama
    echo "## llama3.1-8b"; bench_model llama3.1-8b llama31-8b
  } 2>&1 | tee "$out/bench.log"
fi
exit $status
