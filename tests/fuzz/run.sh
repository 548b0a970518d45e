#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) and runs each one for a
# number of seconds, starting from its seed corpus in tests/fuzz/corpus/<target>/.
#
#   tests/fuzz/run.sh [seconds] [target ...]     # default: 20 s, every target
#
# Prints one line per target, e.g. "fuzz_sse_request: 123456 runs, no crash",
# and exits non-zero when any target crashed (the input that did it is kept
# under $BUILD_DIR/fuzz-work/<target>/, its report in .../log).
#
# The whole tree is compiled with AddressSanitizer, UBSan and libFuzzer's
# coverage instrumentation (BROKER_SANITIZE + -fsanitize=fuzzer-no-link), not
# only the fuzz_*.c files: otherwise an overread inside lib/ or services/ would
# go unseen and the fuzzer would be blind to the branches it is meant to explore.
# The seed corpus is copied, never written to: new inputs stay in the work dir.
#
# Environment: BUILD_DIR (default build-fuzz), CC (default clang).
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
SECONDS_PER_TARGET=${1:-20}
shift $(( $# > 0 ? 1 : 0 ))
BUILD_DIR=${BUILD_DIR:-build-fuzz}
CC=${CC:-clang}

case $SECONDS_PER_TARGET in
  ''|*[!0-9]*) echo "usage: $0 [seconds] [target ...]" >&2; exit 2 ;;
esac

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for src in tests/fuzz/fuzz_*.c; do
    targets+=("$(basename "$src" .c)")
  done
fi

log=$(mktemp)
if ! cmake -S . -B "$BUILD_DIR" -DBROKER_FUZZ=ON -DCMAKE_C_COMPILER="$CC" -DBROKER_WERROR=ON \
     -DBROKER_SANITIZE=ON -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" >"$log" 2>&1; then
  cat "$log"; rm -f "$log"; echo "fuzz: configure failed" >&2; exit 2
fi
rm -f "$log"
if ! cmake --build "$BUILD_DIR" -j2 --target "${targets[@]}" >"$BUILD_DIR/fuzz-build.log" 2>&1; then
  tail -40 "$BUILD_DIR/fuzz-build.log"; echo "fuzz: build failed" >&2; exit 2
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

crashed=0
for t in "${targets[@]}"; do
  work=$ROOT/$BUILD_DIR/fuzz-work/$t
  rm -rf "$work" && mkdir -p "$work/corpus"
  if [ -d "tests/fuzz/corpus/$t" ]; then
    cp -r "tests/fuzz/corpus/$t/." "$work/corpus/"
  fi
  "$ROOT/$BUILD_DIR/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=10000 \
    -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1
  rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
  [ -z "$runs" ] && runs=$(grep -oE '^#[0-9]+' "$work/log" | tail -1 | tr -d '#')
  artifact=$(ls "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* 2>/dev/null | head -1)
  if [ "$rc" -ne 0 ] || [ -n "$artifact" ]; then
    crashed=1
    echo "$t: ${runs:-?} runs, CRASH (exit $rc; input: ${artifact:-none saved}; log: $work/log)"
    grep -m 12 -E 'REQUIRE failed|ERROR|SUMMARY|runtime error|#[0-9]+ 0x' "$work/log" | sed 's/^/    /'
  else
    echo "$t: ${runs:-?} runs, no crash"
  fi
done
exit $crashed
