#!/usr/bin/env bash
# Builds codecllm with CUDA here and packs what the GPU machine needs into .device/bundle
# (git-ignored; pass it to the device tool's `carry`): the binary, the test executables, the
# shared libraries that machine lacks, and the reference models the tests read.
#   scripts/bundle-gpu.sh && (on the GPU machine) scripts/gpu-check.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
CLLM_BUILD_DIR=build-gpu scripts/build.sh -DCLLM_CUDA=ON >/dev/null
bundle=.device/bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/tests" "$bundle/lib" "$bundle/shared"
cp build-gpu/bin/codecllm "$bundle/bin/"
for t in build-gpu/tests/test-*; do [ -x "$t" ] && [ -f "$t" ] && cp "$t" "$bundle/tests/"; done
# Libraries from Debian that the GPU machine's Ubuntu may lack or have in another version.
ldd build-gpu/bin/codecllm | awk '/sentencepiece|protobuf/ {print $3}' | xargs -r -I{} cp -L {} "$bundle/lib/"
shared=${CLLM_SHARED_MODELS:-../shared/models}
cp "$shared"/stories260K.bin "$shared"/stories260K-f32.gguf "$shared"/tok512.model "$shared"/tok512.bin "$shared"/tokenizer.model "$shared"/tokenizer.bin "$bundle/shared/"
cp -r "$shared"/llama3.1 "$bundle/shared/"
strip "$bundle"/bin/* "$bundle"/tests/* 2>/dev/null || true
du -sh "$bundle"
