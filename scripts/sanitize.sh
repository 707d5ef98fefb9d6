#!/usr/bin/env bash
# Runs the test suite under AddressSanitizer and UndefinedBehaviorSanitizer builds
# (docs/RELIABILITY.md): `swift test --sanitize=address`, and UBSan on the C/C++ targets.
# Slow (two extra builds and two sanitized runs): a script, not CI.
#
#   scripts/sanitize.sh [address|undefined]... [-- SWIFT_TEST_ARGS...]
#
# Default: both, one after the other, each in its own scratch path (.build-asan, .build-ubsan).
# SWIFT_TEST_ARGS go to `swift test` (e.g. -- --filter HostileInputTests). Logs go to
# .fuzz/sanitize-KIND.log. The run fails on a failing test, on any AddressSanitizer or
# LeakSanitizer report, and on any UBSan "runtime error" (UBSan reports and continues, so the
# log is searched). LeakSanitizer ignores the system-library leaks listed in Fuzz/lsan.supp.
set -uo pipefail
cd "$(dirname "$0")/.."

kinds=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  case $1 in
    address|undefined) kinds+=("$1") ;;
    *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
  shift
done
[ "${1:-}" = "--" ] && shift
[ ${#kinds[@]} -eq 0 ] && kinds=(address undefined)

export SWIFT_BACKTRACE=enable=no
export LSAN_OPTIONS=suppressions=$PWD/Fuzz/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}
export ASAN_OPTIONS=detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}
export UBSAN_OPTIONS=print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}
mkdir -p .fuzz
failed=0
for kind in "${kinds[@]}"; do
  scratch=.build-asan; [ "$kind" = undefined ] && scratch=.build-ubsan
  log=.fuzz/sanitize-$kind.log
  echo "== swift test, $kind sanitizer (scratch $scratch, log $log)"
  start=$(date +%s)
  if [ "$kind" = address ]; then
    flags=(--sanitize=address)
  else
    # swiftc has no -sanitize=undefined on Linux (and `swift test --sanitize=undefined` fails
    # on the first Swift file); Swift traps on overflow and bad indices by itself. UBSan goes
    # to the C and C++ targets (the kernels, the BLAS/oneDNN loader, the SentencePiece bridge)
    # and its runtime is linked through clang.
    flags=(-Xcc -fsanitize=undefined -Xcxx -fsanitize=undefined -Xswiftc -Xclang-linker -Xswiftc -fsanitize=undefined)
  fi
  if [ "$kind" = address ] && [ $# -eq 0 ]; then
    # OpenMPI's ranks leak inside libmpi, libopen-pal, hwloc and MCA plugins that MPI_Finalize
    # has already unloaded (so their frames cannot be named in a suppression): the MPI tests
    # run on their own with LeakSanitizer off; ASan's memory errors still count there.
    # HostileInputTests and HostileCLITests bound the CLI they spawn with `ulimit -v 4000000`,
    # and an ASan process cannot start under an address-space limit (it reserves ~15 TB of
    # shadow memory first): they run in the undefined pass and in the plain suite.
    swift test --scratch-path "$scratch" "${flags[@]}" --skip MPITests --skip HostileInputTests --skip HostileCLITests >"$log" 2>&1
    status=$?
    echo "   (MPITests with ASAN_OPTIONS=detect_leaks=0, appended to the log)"
    ASAN_OPTIONS=detect_leaks=0 swift test --scratch-path "$scratch" "${flags[@]}" --filter MPITests >>"$log" 2>&1 || status=1
  else
    swift test --scratch-path "$scratch" "${flags[@]}" "$@" >"$log" 2>&1
    status=$?
  fi
  reports=$(grep -cE '^(==[0-9]+==ERROR: (Address|Leak)Sanitizer|.*runtime error: )' "$log")
  summary=$(grep -E 'Test run with [0-9]+ tests|Executed [0-9]+ tests' "$log" | tail -2 | tr '\n' ' ')
  echo "   exit $status, $reports sanitizer report(s), $(( $(date +%s) - start )) s; $summary"
  if [ $status -ne 0 ] || [ "$reports" -ne 0 ]; then
    failed=1
    grep -m5 -E 'ERROR: (Address|Leak)Sanitizer|runtime error: |SUMMARY|✘|error:' "$log"
  fi
done
exit $failed
