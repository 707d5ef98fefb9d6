#!/usr/bin/env bash
# Issue 10's experiments on real checkpoints: base / LoRA r=8 / NdLinear-LoRA, ours and the
# PyTorch+PEFT reference (scripts/reference_finetune.py) from the SAME initial adapter and the
# same data order. Results land in runs/<exp>/; RESULTS.md quotes them.
#
#   scripts/fetch_models.sh all && scripts/real_model_experiments.sh exp1   # SmolLM2: ARC-Easy, BoolQ
#   scripts/real_model_experiments.sh exp3                                  # Qwen2.5-Coder: math → GSM8K
#   METHODS=ndlinear-zero REF=0 BASE=0 scripts/real_model_experiments.sh exp1  # only the zero-init NdLinear rows
#
# Needs: a release build (swift build -c release), python3 with torch transformers peft gguf,
# the datasets in ../shared/data (or DATASETS=...). Long: run under nohup.
set -euo pipefail
cd "$(dirname "$0")/.."
EXP=${1:?usage: $0 exp1|exp3 [task...]}; shift || true
BIN=${BIN:-.build/release/finetune}
DATASETS=${DATASETS:-../shared/data/datasets/llm-adapters/dataset}
THREADS=${THREADS:-2}
OUT=runs/$EXP
mkdir -p "$OUT" runs/data

timed() {  # timed LOG cmd...: run, keep stderr in LOG, append wall time and peak RSS to LOG
  local log=$1; shift
  /usr/bin/time -f "wall_s %e peak_rss_kb %M" -a -o "$log.time" "$@" 2> "$log"
}

hf_model() {  # an f32 Hugging Face copy of a GGUF (both sides compute from the same weights)
  local gguf=$1 dir=$2
  [ -f "$dir/model.safetensors" ] || python3 ../shared/tools/gguf_to_hf.py "$gguf" "$dir" --dtype float32
}

subset() {  # subset SRC DST FROM COUNT: COUNT records from index FROM (negative: from the end), file order
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); a=int(sys.argv[3]); json.dump(d[a:][:int(sys.argv[4])], open(sys.argv[2],"w"), indent=1)' "$@"
}

run_pair() {  # run_pair TASK METHOD TRAIN VAL TEST COMMON_TRAIN_ARGS... -- EVAL_ARGS...
  # METHOD: lora, ndlinear, or ndlinear-zero (NdLinear with --ndlinear-init zero; ours only:
  # the reference script has the reference init alone).
  local task=$1 method=$2 train=$3 val=$4 test=$5; shift 5
  local atype=${method%-zero} extra=()
  [ "$atype" = "$method" ] || extra=(--ndlinear-init zero)
  local targs=() eargs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do targs+=("$1"); shift; done
  shift; eargs=("$@")
  local init=$OUT/init-$task-$method ref=$OUT/ref-$task-$method ours=$OUT/ours-$task-$method
  # 1. the reference: writes the initial adapter, trains, evaluates (REF=0: ours alone).
  local ref_run=${REF:-1}
  [ ${#extra[@]} = 0 ] || ref_run=0
  if [ "$ref_run" = 0 ]; then
    init=""
  elif [ ! -f "$ref/summary.json" ]; then
    rm -rf "$init" "$ref"
    timed "$ref.log" python3 scripts/reference_finetune.py --model "$MODEL" --data "$train" --val-data "$val" \
      --output "$ref" --adapter-type "$method" --save-init "$init" --threads "$THREADS" "${targs[@]}" \
      --eval-data "$test" --task "$task" --eval-batch-size 16 "${eargs[@]}"
  fi
  # 2. ours from the same initial adapter, file order. The adapter's files decide its rank, so
  # `train` refuses --r beside --adapter-init: drop it from the shared arguments then.
  local otargs=("${targs[@]}")
  if [ -n "$init" ]; then
    otargs=(); local i=0
    while [ $i -lt ${#targs[@]} ]; do
      if [ "${targs[$i]}" = "--r" ]; then i=$((i + 2)); else otargs+=("${targs[$i]}"); i=$((i + 1)); fi
    done
  fi
  if [ ! -f "$ours/adapter/adapter_config.json" ]; then
    rm -rf "$ours"
    timed "$ours.log" "$BIN" train --model "$MODEL" --data "$train" --val-data "$val" --output "$ours" \
      --adapter-type "$atype" "${extra[@]}" ${init:+--adapter-init "$init"} --no-shuffle --threads "$THREADS" --log-every 8 "${otargs[@]}"
  fi
  if [ ! -f "$ours/eval-$task.json" ]; then
    timed "$ours/eval-$task.log" "$BIN" eval --model "$MODEL" --adapter "$ours/adapter" --data "$test" --task "$task" \
      --batch-size 16 --threads "$THREADS" --output "$ours/preds-$task.jsonl" --append-results "$OUT/results.jsonl" \
      --json "${eargs[@]}" > "$ours/eval-$task.json.tmp"
    mv "$ours/eval-$task.json.tmp" "$ours/eval-$task.json"
  fi
  [ "$ref_run" = 0 ] || python3 scripts/compare_runs.py "$ours" "$ref" --title "$EXP $task $method" --svg "$OUT/loss-$task-$method.svg" \
    > "$OUT/compare-$task-$method.json"
}

base_eval() {  # base_eval TASK TEST EVAL_ARGS...: the model without adapter, ours and the reference
  local task=$1 test=$2; shift 2
  if [ ! -f "$OUT/base-$task.json" ]; then
    timed "$OUT/base-$task.log" "$BIN" eval --model "$MODEL" --data "$test" --task "$task" --batch-size 16 \
      --threads "$THREADS" --output "$OUT/base-$task-preds.jsonl" --append-results "$OUT/results.jsonl" --json "$@" \
      > "$OUT/base-$task.json.tmp"
    mv "$OUT/base-$task.json.tmp" "$OUT/base-$task.json"
  fi
  if [ "${REF:-1}" != 0 ] && [ ! -f "$OUT/ref-base-$task/summary.json" ]; then
    timed "$OUT/ref-base-$task.log" python3 scripts/reference_finetune.py --model "$MODEL" --adapter-type none \
      --output "$OUT/ref-base-$task" --threads "$THREADS" --eval-data "$test" --task "$task" --eval-batch-size 16 "$@"
  fi
}

case $EXP in
exp1)
  MODEL=models/real/smollm2-135m-f32
  hf_model models/gguf/SmolLM2-135M-Instruct.Q4_1.gguf "$MODEL"
  COMMON=(--r 8 --template alpaca --batch-size 8 --lr 3e-4 --warmup-steps 5 --max-length 256 --seed 42)
  EVAL=(--template alpaca --max-new-tokens 16)
  for task in ${@:-arc-e boolq}; do
    src=$([ "$task" = arc-e ] && echo ARC-Easy || echo boolq)
    n=${TRAIN_N:-$([ "$task" = arc-e ] && echo 384 || echo 256)}   # ~40k / ~18k training tokens
    subset "$DATASETS/$src/train.json" runs/data/$task-train$n.json 0 "$n"
    subset "$DATASETS/$src/train.json" runs/data/$task-val64.json -64 64
    subset "$DATASETS/$src/test.json" runs/data/$task-test500.json 0 500
    [ "${BASE:-1}" = 0 ] || base_eval "$task" runs/data/$task-test500.json "${EVAL[@]}"
    for method in ${METHODS:-lora ndlinear}; do
      run_pair "$task" "$method" runs/data/$task-train$n.json runs/data/$task-val64.json runs/data/$task-test500.json \
        "${COMMON[@]}" -- "${EVAL[@]}"
    done
  done
  ;;
exp3)  # ours only (REF=1 adds the PyTorch runs: hours on 2 cores)
  REF=${REF:-0}
  MODEL=models/real/qwen25-coder-f32
  hf_model models/gguf/Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf "$MODEL"
  TRAIN_N=${TRAIN_N:-256}; TEST_N=${TEST_N:-200}
  COMMON=(--r 8 --template ndlinear --batch-size 4 --lr 3e-4 --warmup-steps 4 --max-length 384 --seed 42)
  EVAL=(--template ndlinear --max-new-tokens ${MAX_NEW:-256})
  MATH=${MATH:-$DATASETS/../ft-training_set/math_data.json}
  subset "$MATH" runs/data/math-train$TRAIN_N.json 0 "$TRAIN_N"
  subset "$MATH" runs/data/math-val32.json -32 32
  subset "$DATASETS/gsm8k/test.json" runs/data/gsm8k-test$TEST_N.json 0 "$TEST_N"
  base_eval gsm8k runs/data/gsm8k-test$TEST_N.json "${EVAL[@]}"
  for method in lora ndlinear ndlinear-zero; do
    run_pair gsm8k "$method" runs/data/math-train$TRAIN_N.json runs/data/math-val32.json runs/data/gsm8k-test$TEST_N.json \
      "${COMMON[@]}" -- "${EVAL[@]}"
  done
  ;;
*) echo "unknown experiment $EXP (exp1 or exp3)" >&2; exit 2 ;;
esac
