#!/usr/bin/env bash
# Runs `finetune bench` and the PyTorch+PEFT reference (../shared/bench/torch_reference_bench.py,
# needs `pip install torch transformers peft`) alternately on the same shapes and thread count,
# and prints one JSON line per measurement. usage: scripts/bench_vs_torch.sh [config.json ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${TORCH_BENCH:-../shared/bench/torch_reference_bench.py}
threads=${THREADS:-2}
seq=${SEQ:-256}
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(Tests/Fixtures/model-configs/smollm2-135m.json Tests/Fixtures/model-configs/qwen3-0.6b.json)
swift build -c release >/dev/null
for cfg in "${configs[@]}"; do
  for adapter in lora ndlinear; do
    for mode in train prefill decode; do
      steps=3; [ "$mode" = decode ] && steps=32
      for dtype in bf16 f32; do
        .build/release/finetune bench --model "$cfg" --mode $mode --adapter-type $adapter --r 8 --dtype $dtype \
          --seq $seq --steps $steps --threads $threads --json
      done
    done
    python3 "$ref" "$cfg" --adapter $adapter --rank 8 --seq $seq --threads $threads
  done
done
