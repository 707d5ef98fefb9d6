#!/usr/bin/env bash
# Issue 18's training figures in ONE run: ours and the PyTorch+PEFT reference alternately, first
# at the machine's own ISA level, then with both sides capped at AVX2 (FINETUNE_ISA=avx2 for us;
# ATEN_CPU_CAPABILITY, MKL_ENABLE_INSTRUCTIONS and ONEDNN_MAX_CPU_ISA for PyTorch), so an
# AVX2-only CPU is measured on an AVX-512 machine. Each JSON line gets "cap": native|avx2.
#
#   scripts/bench_isa.sh > benchmarks/$(date +%F)-isa.jsonl
#   python3 scripts/bench_isa_tables.py benchmarks/$(date +%F)-isa.jsonl
#
# Run it on an otherwise idle machine (~25 min on 2 cores). TORCH=0 skips the reference.
# usage: scripts/bench_isa.sh [config.json ...]
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
lscpu | sed -n 's/^Model name: *//p' | python3 -c 'import json,sys; print(json.dumps({"lscpu_model": sys.stdin.read().strip()}))'
tag() { python3 -c '
import json, sys
for line in sys.stdin:
    line = line.strip()
    if line.startswith("{"):
        d = json.loads(line); d["cap"] = sys.argv[1]; print(json.dumps(d), flush=True)' "$1"; }

for cap in native avx2; do
  if [ $cap = avx2 ]; then
    ours=(FINETUNE_ISA=avx2); torch=(ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2)
  else
    ours=(FINETUNE_ISA=); torch=(ATEN_CPU_CAPABILITY=default)
  fi
  for cfg in "${configs[@]}"; do
    for gemm in openblas onednn; do
      env "${ours[@]}" "$B" bench --json --model "$cfg" --mode gemm --seq "$seq" --threads "$threads" --gemm $gemm | tag $cap
    done
    for adapter in lora ndlinear; do
      for gemm in openblas onednn; do
        env "${ours[@]}" "$B" bench --json --r 8 --model "$cfg" --mode train --adapter-type $adapter --seq "$seq" --threads "$threads" --gemm $gemm | tag $cap
      done
      if [ "${TORCH:-1}" != 0 ]; then
        # bf16 autocast only at the native level: without AVX512-BF16 PyTorch emulates it
        # (6 tok/s on smollm2 capped at AVX2, and qwen3-0.6b took over 4 minutes a step).
        acs="none bf16"; [ $cap = avx2 ] && acs=none
        for ac in $acs; do
          env "${torch[@]}" python3 "$ref" "$cfg" --adapter $adapter --rank 8 --seq "$seq" --threads "$threads" --autocast $ac --decode 0 | tag $cap
        done
      fi
    done
  done
done
