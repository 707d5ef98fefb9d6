#!/bin/bash
# DoRA against LoRA: the training step (release build, random bf16 weights, seq 256, batch 1,
# r 8, all seven projections), the two adapters alternating within one run, 3 rounds per model.
# usage: swift build -c release && scripts/bench_dora.sh [finetune] > benchmarks/DATE-dora.jsonl
B=${1:-.build/release/finetune}
for m in smollm2-135m qwen2.5-0.5b; do
  for round in 1 2 3; do
    for k in lora dora; do
      "$B" bench --model Tests/Fixtures/model-configs/$m.json --mode train --adapter-type $k --r 8 --seq 256 --steps 3 --json |
        python3 -c "import json,sys; d=json.load(sys.stdin); print(json.dumps({'model':'$m','round':$round,'adapter':d['adapter'],'tokens_per_s':d['tokens_per_s'],'s_per_step':d['seconds_per_step'],'rss':d['peak_rss_mb'],'params':d['trainable_parameters']}))"
    done
  done
done
