#!/usr/bin/env bash
# One command from a fresh Debian machine to the main job: install, build, then compress a
# model, inspect it, verify it bit for bit against its source, and generate text from it.
# The model: stories260K (real trained weights) from ../shared/models when present, else a
# small synthetic model that codecllm makes itself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
bin=build/bin/codecllm
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
shared=${CLLM_SHARED_MODELS:-../shared/models}

if [ -f "$shared/stories260K.bin" ]; then
  src="$shared/stories260K.bin"; tok=(--tokenizer "$shared/tok512.model")
else
  src="$work/synthetic"; tok=()
  "$bin" synth --preset tiny-test "$src"
fi
echo "== compress" >&2
"$bin" compress "$src" "$work/model.cllm" "${tok[@]}"
echo "== info" >&2
"$bin" info "$work/model.cllm" --no-tensors
echo "== verify against the source" >&2
"$bin" verify "$work/model.cllm" "$src" "${tok[@]}"
echo "== run" >&2
"$bin" run "$work/model.cllm" -p "Once upon a time" -n 64 --temp 0
echo
