#!/usr/bin/env bash
# Runs a gguf-lora export in llama.cpp itself (not part of CI): builds llama-completion from
# PyPI's llama-cpp-python source package (vendored llama.cpp; needs cmake and g++, ~10 min on
# 2 cores), then completes one prompt with the base GGUF alone and with the LoRA file.
#   scripts/llamacpp_lora_check.sh BASE.gguf LORA.gguf ["prompt"]
set -euo pipefail
base=$1; lora=$2
prompt=${3:-$'Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:'}
work=${LLAMACPP_DIR:-/tmp/llamacpp}
src="$work/llama_cpp_python-0.3.36/vendor/llama.cpp"
bin="$src/build/bin/llama-completion"
if [ ! -x "$bin" ]; then
  mkdir -p "$work"
  python3 -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$work"
  tar xzf "$work/llama_cpp_python-0.3.36.tar.gz" -C "$work"
  cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DGGML_NATIVE=ON \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >/dev/null
  cmake --build "$src/build" --target llama-completion -j"$(nproc)" >/dev/null
fi
echo "== llama.cpp, base only"
"$bin" -m "$base" -p "$prompt" -n 24 --temp 0 -no-cnv --no-warmup 2>/dev/null; echo
echo "== llama.cpp, base + --lora $lora"
"$bin" -m "$base" --lora "$lora" -p "$prompt" -n 24 --temp 0 -no-cnv --no-warmup 2>/dev/null; echo
