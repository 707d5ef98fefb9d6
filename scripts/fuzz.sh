#!/usr/bin/env bash
# Builds the libFuzzer harnesses of Fuzz/ (docs/RELIABILITY.md) and runs each for SECONDS.
#
#   scripts/fuzz.sh SECONDS [TARGET...]      targets: safetensors gguf tokenizer-json
#                                            sentencepiece records yaml-config jinja (default: all)
#
# Environment:
#   FUZZ_PARALLEL=N    fuzzers running at once (default 1; each is one process, -jobs=1)
#   FUZZ_NO_BUILD=1    reuse the last build
#   FUZZ_ARGS="..."    extra libFuzzer flags
#   FUZZ_PRODUCT_ROOT=DIR  fuzz the finetune package at DIR instead of this checkout (absolute
#                      path; e.g. a `git archive HEAD` snapshot while the tree is mid-edit)
#
# Working corpora, crash artifacts and logs go to .fuzz/ (not in git): .fuzz/corpus/TARGET is
# seeded from Fuzz/Seeds/TARGET (small files, in git) and from the files Fuzz/Seeds/TARGET.list
# names (larger fixtures, referenced rather than copied; missing ones are skipped). A crash,
# leak or timeout leaves .fuzz/artifacts/TARGET/{crash,leak,timeout,oom}-* and a nonzero exit.
# Reproduce one with: .build-fuzz-libfuzzer/release/fuzz-TARGET FILE
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || ! [[ $1 =~ ^[0-9]+$ ]]; then
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
seconds=$1; shift
all=(safetensors gguf tokenizer-json sentencepiece records yaml-config jinja)
targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "fuzz.sh: unknown target '$t' (expected one of: ${all[*]})" >&2; exit 2; }
done

scratch=.build-fuzz-libfuzzer
bin=$scratch/release
if [ -z "${FUZZ_NO_BUILD:-}" ]; then
  # Every module (the product's LLMCore, Tokenize, Training, Yams included) is built with
  # coverage and AddressSanitizer; -parse-as-library because libFuzzer supplies main().
  swift build --package-path Fuzz --scratch-path "$scratch" -c release \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library \
    -Xcc -fsanitize=fuzzer-no-link,address -Xcxx -fsanitize=fuzzer-no-link,address
fi

# Swift's own crash backtracer is off: libFuzzer and ASan report the crash (with the stack) and
# save the input. LeakSanitizer ignores the system-library leaks listed in Fuzz/lsan.supp.
export SWIFT_BACKTRACE=enable=no
export LSAN_OPTIONS=suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}

# libFuzzer limits: one input may take 20 s (the Jinja harness's time limit is 2 s a rendering)
# and 2 GB, so a hang or a runaway allocation is a finding too; ASan reports leaks.
run_target() {
  local t=$1 corpus=.fuzz/corpus/$1 artifacts=.fuzz/artifacts/$1 log=.fuzz/logs/$1.log
  mkdir -p "$corpus" "$artifacts" .fuzz/logs
  [ -d "Fuzz/Seeds/$t" ] && cp -n "Fuzz/Seeds/$t"/* "$corpus"/ 2>/dev/null || true
  if [ -f "Fuzz/Seeds/$t.list" ]; then
    while read -r f; do
      [ -z "$f" ] || [[ $f == \#* ]] && continue
      [ -f "$f" ] && { cp -n "$f" "$corpus/seed-$(basename "$(dirname "$f")")-$(basename "$f")" || true; }
    done < "Fuzz/Seeds/$t.list"
  fi
  local dict=()
  case $t in
    safetensors|records|tokenizer-json) dict=(-dict=Fuzz/Dictionaries/json.dict) ;;
    yaml-config) dict=(-dict=Fuzz/Dictionaries/yaml.dict) ;;
    jinja) dict=(-dict=Fuzz/Dictionaries/jinja.dict) ;;
  esac
  local status=0
  # shellcheck disable=SC2086
  "$bin/fuzz-$t" "$corpus" "${dict[@]}" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 \
    -malloc_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1 || status=$?
  local runs cov files bytes
  runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1 || true)
  cov=$(grep -o 'DONE .*corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1 | sed 's/DONE *//' || true)
  files=$(find "$corpus" -type f | wc -l)
  bytes=$(du -sb "$corpus" | cut -f1)
  if [ $status -eq 0 ]; then
    echo "fuzz-$t: ok: ${runs:-?}s; ${cov:-?}; corpus dir $files files, $bytes bytes (log $log)"
  else
    echo "fuzz-$t: FAILED (exit $status): see $log and $artifacts/"
    grep -m3 -E 'ERROR|SUMMARY|Fatal error|panic' "$log" || true
    touch ".fuzz/logs/$t.failed"
  fi
}

parallel=${FUZZ_PARALLEL:-1}
mkdir -p .fuzz/logs
for t in "${targets[@]}"; do rm -f ".fuzz/logs/$t.failed"; done
for t in "${targets[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n || true; done
  run_target "$t" &
done
wait
for t in "${targets[@]}"; do [ -e ".fuzz/logs/$t.failed" ] && exit 1; done
exit 0
