#!/usr/bin/env bash
# Issue 18's generation figures in ONE run, ours and llama.cpp alternately on the same GGUF files:
# prefill of 256 tokens (ours: `bench --mode prefill --logits last`, llama-bench pp256), decode of
# 32 tokens from a short context (ours: `bench --mode decode --seq 16 --steps 32`, llama-bench
# tg32), and batched generation (`eval` on 64 GSM8K items, batch 16, 128 new tokens, against
# llama-batched-bench with 16 parallel sequences of 128+128 tokens). Not part of CI: llama.cpp
# is built outside the repo (LLAMACPP_BIN, as scripts/llamacpp_lora_check.sh builds it; add the
# llama-bench, llama-quantize and llama-batched-bench targets), and the F32/BF16/Q8_0 files come
# from the fetched Q4_1 by `llama-quantize --allow-requantize`.
#
#   scripts/bench_gguf.sh > benchmarks/$(date +%F)-gguf.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
L=${LLAMACPP_BIN:-/tmp/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
threads=${THREADS:-2}
swift build -c release >/dev/null
B=.build/release/finetune
q41=models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$q41" ] || bash scripts/fetch_models.sh >&2
for t in F32 BF16 Q8_0; do
  f=models/gguf/SmolLM2-135M-Instruct.$t.gguf
  [ -f "$f" ] || "$L/llama-quantize" --allow-requantize "$q41" "$f" "$t" >&2
done
tag() { python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line); d.update(json.loads(sys.argv[1])); print(json.dumps(d), flush=True)' "$1"; }

for t in F32 BF16 Q8_0 Q4_1; do
  f=models/gguf/SmolLM2-135M-Instruct.$t.gguf
  "$B" bench --json --model "$f" --mode prefill --logits last --adapter-type none --seq 256 --threads "$threads" | tag "{\"system\":\"finetune\",\"file\":\"$t\"}"
  "$L/llama-bench" -m "$f" -p 256 -n 0 -t "$threads" -o jsonl 2>/dev/null | tag "{\"system\":\"llama.cpp\",\"file\":\"$t\",\"test\":\"pp256\"}"
  "$B" bench --json --model "$f" --mode decode --adapter-type none --seq 16 --steps 32 --threads "$threads" | tag "{\"system\":\"finetune\",\"file\":\"$t\"}"
  "$L/llama-bench" -m "$f" -p 0 -n 32 -t "$threads" -o jsonl 2>/dev/null | tag "{\"system\":\"llama.cpp\",\"file\":\"$t\",\"test\":\"tg32\"}"
done
f=models/gguf/SmolLM2-135M-Instruct.BF16.gguf
gsm=${GSM8K:-../shared/data/datasets/gsm8k/test.jsonl}
"$B" eval --json --model "$f" --data "$gsm" --limit 64 --batch-size 16 --max-new-tokens 128 --threads "$threads" 2>/dev/null | tag '{"system":"finetune","file":"BF16","test":"eval-batch16"}'
"$L/llama-batched-bench" -m "$f" -c 8192 -b 2048 -ub 512 -npp 128 -ntg 128 -npl 16 -t "$threads" --output-format jsonl 2>/dev/null | tag '{"system":"llama.cpp","file":"BF16","test":"batched-16"}'
