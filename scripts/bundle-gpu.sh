#!/usr/bin/env bash
# Builds codecllm with CUDA here and packs what the GPU machine needs into .device/bundle
# and .device/bundle.tar.xz (git-ignored; carry the archive with the device tool): the binary, the test executables, the
# shared libraries that machine lacks, the reference models the tests read, and the source tree's files they read at run
# time (tests/fixtures, scripts/tokenizer-parity.py), which they find through CLLM_SOURCE_DIR (gpu-check.sh sets it to the
# bundle) or, failing that, in the folders above the executable: the bundle runs from any folder.
#   scripts/bundle-gpu.sh && (on the GPU machine) scripts/gpu-check.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/cuda/bin"
# CLLM_BUILD_DIR picks the build folder (default build-gpu; build/ works too, it has sm_90).
build=${CLLM_BUILD_DIR:-build-gpu}
CLLM_BUILD_DIR=$build scripts/build.sh -DCLLM_CUDA=ON >/dev/null
bundle=.device/bundle
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/tests" "$bundle/lib" "$bundle/shared"
cp "$build"/bin/codecllm "$bundle/bin/"
# CLLM_BUNDLE_TESTS (a glob, default test-*) picks the test executables: 'test-gpu-[defk]*' leaves room in the carry's
# 64 MiB for other files (a previous binary to compare with, the peer's source).
for t in "$build"/tests/${CLLM_BUNDLE_TESTS:-test-*}; do [ -x "$t" ] && [ -f "$t" ] && cp "$t" "$bundle/tests/"; done
# The bundle's root stands in for the source tree (tests/test_util.h, source_dir()). The .deps venv stays behind: it
# belongs to this machine's Python; there test-tokenizer's parity case uses python3 or skips.
cp -r tests/fixtures "$bundle/tests/fixtures"
mkdir -p "$bundle/scripts"
cp scripts/tokenizer-parity.py "$bundle/scripts/"
cp tests/serve_test.py tests/chat_page_test.py "$bundle/tests/"  # the chat page test skips without Chromium
# Libraries from Debian that the GPU machine's Ubuntu may lack or have in another version.
# ICU (Unicode normalization of tokenizer.json pipelines) is version 72 here; Ubuntu has another. cpp-httplib (serve)
# and the brotli it links are not on that machine at all.
ldd "$build"/bin/codecllm | awk '/sentencepiece|protobuf|libicu|pcre2|httplib|brotli/ {print $3}' | xargs -r -I{} cp -L {} "$bundle/lib/"
shared=${CLLM_SHARED_MODELS:-../shared/models}
cp "$shared"/stories260K.bin "$shared"/stories260K-f32.gguf "$shared"/tok512.model "$shared"/tok512.bin "$shared"/tokenizer.model "$shared"/tokenizer.bin "$bundle/shared/"
cp -r "$shared"/llama3.1 "$bundle/shared/"
cp "$build"/tests/bench-cpu-kernels "$bundle/tests/"
for b in bench-gpu-attention bench-gpu-fused; do if [ -x "$build/tests/$b" ]; then cp "$build/tests/$b" "$bundle/tests/"; fi; done
# The fuzz targets, when scripts/fuzz.sh has built them, for gpu-check.sh's long run on 16 cores.
if [ -x build-fuzz/tests/fuzz/fuzz_cllm ] && [ -d build-fuzz/fuzz-seeds ]; then
  mkdir -p "$bundle/fuzz"
  cp build-fuzz/tests/fuzz/fuzz_{cllm,safetensors,gguf,llama2c,tokenizer,bpe} "$bundle/fuzz/"
  cp -r build-fuzz/fuzz-seeds "$bundle/fuzz/seeds"
  cp -r tests/fuzz/regressions "$bundle/fuzz/regressions"
  ldd build-fuzz/tests/fuzz/fuzz_cllm | awk '/pcre2/ {print $3}' | xargs -r -I{} cp -L {} "$bundle/lib/"
fi
strip "$bundle"/bin/* "$bundle"/tests/test-* "$bundle"/tests/bench-* "$bundle"/fuzz/fuzz_* 2>/dev/null || true
# One archive for the device tool's carry (64 MiB at most with the working tree): gpu-check.sh unpacks it.
# xz, not gzip: ICU's 31 MB of data and the fat binaries (sm_80..90) make 67 MB with gzip, 31 MB with xz.
rm -f .device/bundle.tar.gz
tar cf - -C .device bundle | xz -T0 -6 > .device/bundle.tar.xz
du -sh "$bundle" .device/bundle.tar.xz
