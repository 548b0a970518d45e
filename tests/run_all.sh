#!/usr/bin/env bash
# Runs every test this machine can run and ends with one line:
#   summary: N passed, N failed
# Each part prints its own result; a part that cannot run says so and why,
# and counts as failed unless it is marked optional for a stated reason.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=$ROOT/tests/.work
rm -rf "$WORK" && mkdir -p "$WORK"
PY=/usr/bin/python3

passed=0
failed=0
report=()

note() { printf '\n=== %s\n' "$*"; }
record() { # name passed failed
  passed=$((passed + $2)); failed=$((failed + $3))
  report+=("$(printf '%-34s %4d passed %4d failed' "$1" "$2" "$3")")
}

# ctest in one build tree.
run_ctest() { # name builddir
  local out=$WORK/$1.ctest.log
  (cd "$2" && ctest --output-on-failure -j2 >"$out" 2>&1)
  local line total bad
  line=$(grep -E 'tests passed, [0-9]+ tests failed out of [0-9]+' "$out" | tail -1)
  if [ -z "$line" ]; then
    cat "$out"; record "$1" 0 1; return
  fi
  total=$(sed -E 's/.*out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.* ([0-9]+) tests failed.*/\1/' <<<"$line")
  [ "$bad" -ne 0 ] && cat "$out"
  echo "$line"
  record "$1" $((total - bad)) "$bad"
}

# pytest over a folder, counted from its JUnit XML.
run_pytest() { # name junit-name pytest-args...
  local name=$1 xml=$WORK/$2.xml; shift 2
  $PY -m pytest -q -p no:cacheprovider --junitxml="$xml" "$@" 2>&1 | tail -25
  if [ ! -s "$xml" ]; then record "$name" 0 1; return; fi
  local counts
  counts=$($PY - "$xml" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f, sk)
PYEOF
)
  read -r p f s <<<"$counts"
  if [ "$s" -gt 0 ]; then echo "$name: $s test(s) skipped (reasons above); not counted as passed"; fi
  if [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then f=1; echo "$name: ran no test"; fi
  record "$name" "$p" "$f"
}

note "build (RelWithDebInfo, -Werror)"
if ! make -s build >"$WORK/build.log" 2>&1; then cat "$WORK/build.log"; record build 0 1; fi
note "build (ASan+UBSan)"
if ! make -s build-asan >"$WORK/build-asan.log" 2>&1; then cat "$WORK/build-asan.log"; record build-asan 0 1; fi

note "unit tests (ctest)"
run_ctest "unit" build
note "unit tests under ASan+UBSan (ctest)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest "unit-asan" build-asan

note "black-box: all-in-one broker"
BROKER_BIN=$ROOT/build/broker run_pytest "blackbox" blackbox tests/blackbox
note "black-box: all-in-one broker under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  BROKER_SANITIZED=1 BROKER_BIN=$ROOT/build-asan/broker run_pytest "blackbox-asan" blackbox-asan tests/blackbox

note "browser (headless chromium) against the all-in-one broker"
browser_port=$((20000 + RANDOM % 20000))
build/broker --port=$browser_port --db="$WORK/browser-db" --admin_token=browser-admin \
  --jwt_secret=browser-secret 2>"$WORK/browser-broker.log" &
browser_pid=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$browser_port/healthz" && break; sleep 0.1; done
BROKER_BROWSER_BASE=http://127.0.0.1:$browser_port BROKER_BROWSER_ADMIN_TOKEN=browser-admin \
  run_pytest "browser: all-in-one" browser tests/browser
kill -TERM $browser_pid; wait $browser_pid 2>/dev/null

note "split deployment on loopback (auth, ingest, 2 x stream, nginx gateway)"
split_port=$((20000 + RANDOM % 20000))
rm -f "$WORK/split.ready"
SPLIT_READY_FILE=$WORK/split.ready GATEWAY_PORT=$split_port BUS_INGEST_PORT=$((split_port + 10)) \
  BUS_AUTH_PORT=$((split_port + 11)) DB=$WORK/split-db scripts/run-split.sh >"$WORK/split.log" 2>&1 &
split_pid=$!
for _ in $(seq 1 150); do [ -f "$WORK/split.ready" ] && break; kill -0 $split_pid 2>/dev/null || break; sleep 0.2; done
if [ -f "$WORK/split.ready" ]; then
  BROKER_SPLIT_GATEWAY=http://127.0.0.1:$split_port BROKER_SPLIT_STREAMS=$((split_port + 3)),$((split_port + 4)) \
    run_pytest "split: cross-process" split tests/split
  BROKER_TEST_BASE_URL=http://127.0.0.1:$split_port run_pytest "split: black-box via gateway" split-blackbox tests/blackbox
  BROKER_BROWSER_BASE=http://127.0.0.1:$split_port run_pytest "split: browser via gateway" split-browser tests/browser
else
  echo "split deployment did not start:"; cat "$WORK/split.log"; record "split deployment" 0 1
fi
kill -TERM $split_pid 2>/dev/null; wait $split_pid 2>/dev/null

note "results"
printf '%s\n' "${report[@]}"
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
