#!/usr/bin/env bash
# Issue 8's measurements in ONE run, ours and the PyTorch+PEFT reference alternately on the
# same shapes and thread count (../shared/bench/torch_reference_bench.py; needs
# `pip install torch transformers peft`; TORCH=0 skips it). One JSON line per measurement on
# stdout; scripts/bench_tables.py turns the file into BENCHMARKS.md's tables.
#
#   scripts/bench_vs_torch.sh > benchmarks/$(date +%F)-bench_vs_torch.jsonl
#   python3 scripts/bench_tables.py benchmarks/$(date +%F)-bench_vs_torch.jsonl
#
# Run it on an otherwise idle machine (20–35 min on 2 cores; BIG=0 skips the Llama-3-8B step,
# which needs ~20 GB of RAM). usage: scripts/bench_vs_torch.sh [config.json ...]
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${TORCH_BENCH:-../shared/bench/torch_reference_bench.py}
threads=${THREADS:-2}
seq=${SEQ:-256}
cfgdir=Tests/Fixtures/model-configs
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=($cfgdir/smollm2-135m.json $cfgdir/qwen3-0.6b.json)
swift build -c release >/dev/null
B=.build/release/finetune
bench() { "$B" bench --json --r 8 "$@"; }

for cfg in "${configs[@]}"; do
  # The machine's read bandwidth now (decode's bound): before each model's runs and once after all.
  bench --model "$cfg" --mode bandwidth --steps 5 --threads "$threads"
  # The machine's GEMM rate on this model's step shapes, OpenBLAS's own threads, 1 and N.
  bench --model "$cfg" --mode gemm --seq "$seq" --threads 1
  bench --model "$cfg" --mode gemm --seq "$seq" --threads "$threads"
  for adapter in none lora ndlinear; do
    for dtype in bf16 f32; do
      bench --model "$cfg" --mode train --adapter-type $adapter --dtype $dtype --seq "$seq" --threads "$threads"
      bench --model "$cfg" --mode prefill --adapter-type $adapter --dtype $dtype --seq "$seq" --threads "$threads"
      bench --model "$cfg" --mode prefill --logits last --adapter-type $adapter --dtype $dtype --seq "$seq" --threads "$threads"
      bench --model "$cfg" --mode decode --adapter-type $adapter --dtype $dtype --seq "$seq" --steps 32 --threads "$threads"
    done
    # Prompt masking: positions without a target skip the lm_head (not in the reference).
    if [ $adapter = lora ]; then
      for pf in 0.5 0.9; do
        bench --model "$cfg" --mode train --adapter-type lora --seq "$seq" --threads "$threads" --prompt-fraction $pf
      done
    fi
    # 1-thread step for the scaling target.
    [ $adapter = none ] || bench --model "$cfg" --mode train --adapter-type $adapter --seq "$seq" --threads 1
    if [ $adapter != none ] && [ "${TORCH:-1}" != 0 ]; then
      python3 "$ref" "$cfg" --adapter $adapter --rank 8 --seq "$seq" --threads "$threads"
    fi
  done
done

bench --model "${configs[0]}" --mode bandwidth --steps 5 --threads "$threads"

# Step time against sequence length (activation memory grows with T, scores with T²).
for s in 128 512 1024; do
  for adapter in lora ndlinear; do
    bench --model "${configs[0]}" --mode train --adapter-type $adapter --seq $s --steps 2 --threads "$threads"
  done
done

# An 8B-class model (random bf16 weights) trains a NdLinear-LoRA step at seq 256 in 24 GiB.
if [ "${BIG:-1}" != 0 ]; then
  bench --model $cfgdir/llama-3-8b.json --mode train --adapter-type ndlinear --seq 256 --steps 1 --threads "$threads"
fi
