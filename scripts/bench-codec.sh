#!/usr/bin/env bash
# The codec's numbers on this machine: compressed size against the order-0 bound, and CPU
# encoder/decoder throughput (GPU decoder too, where a GPU exists), on
#   - synthetic Gaussian bf16 weights of realistic std (TinyLlama-1.1B shapes, 2 layers), and
#   - stories260K (real trained fp32 weights, ../shared/models).
#   scripts/bench-codec.sh [WORK_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CLLM_BINARY:-build/bin/codecllm}
[ -x "$bin" ] || scripts/build.sh >/dev/null
work=${1:-$(mktemp -d)}
mkdir -p "$work"
shared=${CLLM_SHARED_MODELS:-../shared/models}

echo "## synthetic bf16, TinyLlama-1.1B shapes, 2 layers (std 0.02)"
[ -f "$work/tinyllama-2l/config.json" ] || "$bin" --quiet synth "$work/tinyllama-2l" --preset tinyllama-1.1b --layers 2
"$bin" compress "$work/tinyllama-2l" "$work/tinyllama-2l.cllm" --force 2>&1 | tail -4
"$bin" bench --codec "$work/tinyllama-2l.cllm" -r 5 2>/dev/null

echo
echo "## stories260K (fp32, real weights)"
"$bin" compress "$shared/stories260K.bin" "$work/stories260K.cllm" --tokenizer "$shared/tok512.model" --force 2>&1 | tail -4
"$bin" bench --codec "$work/stories260K.cllm" -r 20 2>/dev/null
