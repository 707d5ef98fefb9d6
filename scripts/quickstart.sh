#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine (Swift 6.3 already installed) and runs the main job on
# the bundled defaults: a real NdLinear-LoRA fine-tune of the stories260K model on a GSM8K
# slice (before/after validation loss), an evaluation on 50 GSM8K test problems, and the
# exports (PEFT LoKr adapter, NdLinear reference adapter, merged Hugging Face model).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for p in libopenblas-dev libdnnl2 libsentencepiece-dev pkg-config libopenmpi-dev openmpi-bin; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update
  $SUDO apt-get install -y "${need[@]}"
fi

swift build -c release
bin=.build/release/finetune
out=runs/quickstart
rm -rf "$out"

echo "== train (configs/quickstart.yaml)"
"$bin" train --config configs/quickstart.yaml --output "$out"

echo "== evaluate on 50 GSM8K test problems (greedy), before and after"
"$bin" eval --model models/stories260K --data data/gsm8k-test-50.jsonl --template ndlinear \
  --max-new-tokens 128 --batch-size 10 --output "$out/preds-base.jsonl" --append-results "$out/results.jsonl"
"$bin" eval --model models/stories260K --adapter "$out/adapter" --data data/gsm8k-test-50.jsonl --template ndlinear \
  --max-new-tokens 128 --batch-size 10 --output "$out/preds.jsonl" --append-results "$out/results.jsonl"

echo "== report (base vs adapter)"
"$bin" report --results "$out/results.jsonl" --output "$out/results.md" --svg "$out/results.svg"

echo "== export and merge"
"$bin" export --adapter "$out/adapter" --format ndlinear-reference --output "$out/adapter-ndlinear-reference" --model models/stories260K
"$bin" merge --model models/stories260K --adapter "$out/adapter" --output "$out/merged" --dtype f32

echo "== outputs in $out: adapter/ (PEFT LoKr), adapter-ndlinear-reference/, merged/, metrics.jsonl, loss.svg, preds.jsonl, results.md, results.svg"
