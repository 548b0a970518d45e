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
# The black-box suite fails logins and admin tokens on purpose, hundreds a
# minute from one address; servers it runs against have the limits on failed
# credentials off (tests/blackbox/test_hardening.py tests them on servers of
# its own).
NO_LIMITS="--login_limit_user=0 --login_limit_ip=0 --admin_limit_ip=0"
report=()
FAILED_LIST=$WORK/failed.txt

note() { printf '\n=== %s\n' "$*"; }
# A base port whose next 12 ports are free, below the kernel's ephemeral range
# (32768-60999 here), where the outgoing connections of earlier tests live.
free_port_block() {
  $PY - <<'PYEOF'
import random, socket
for _ in range(200):
    base = random.randrange(10000, 32000)
    socks = []
    try:
        for p in range(base, base + 13):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", p)); socks.append(s)
    except OSError:
        continue
    finally:
        for s in socks: s.close()
    print(base); break
PYEOF
}
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
  counts=$($PY - "$xml" "$FAILED_LIST" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
suites = [r] if r.tag == "testsuite" else list(r)
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
print(t - f - sk, f, sk)
# What failed, a line each, for the results at the end (a CI log may keep only its tail).
with open(sys.argv[2], "a") as out:
    for case in r.iter("testcase"):
        for bad in list(case.findall("failure")) + list(case.findall("error")):
            msg = (bad.get("message") or bad.text or "").strip().splitlines()
            out.write("  %s::%s: %s\n" % (case.get("classname", ""), case.get("name", ""),
                                          (msg[0] if msg else "")[:200]))
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

# Helm and the chart's checker are Go programs built from the Go module proxy: minutes on a cold
# cache, so they build niced in the background while the suites run (they take only what the
# suites leave idle), and the chart's part waits for them.
nice -n 19 tests/helm/build.sh >"$WORK/helm-build.out" 2>"$WORK/helm-build.log" &
helm_build_pid=$!

note "unit tests (ctest)"
run_ctest "unit" build
note "unit tests under ASan+UBSan (ctest)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_ctest "unit-asan" build-asan

note "black-box: all-in-one broker"
# Every answer the suite gets is logged for the API reference's check below.
BROKER_STATUS_LOG=$WORK/status.jsonl BROKER_BIN=$ROOT/build/broker run_pytest "blackbox" blackbox tests/blackbox
note "API reference: docs/openapi.yaml against the code, a live broker and the black-box statuses"
BROKER_STATUS_LOG=$WORK/status.jsonl BROKER_BIN=$ROOT/build/broker run_pytest "api reference" api tests/api
note "black-box: all-in-one broker under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  BROKER_SANITIZED=1 BROKER_BIN=$ROOT/build-asan/broker run_pytest "blackbox-asan" blackbox-asan tests/blackbox
note "black-box over HTTPS: the all-in-one broker with --secure and a CA the tests make"
BROKER_TEST_TLS=1 BROKER_BIN=$ROOT/build/broker run_pytest "blackbox over TLS" blackbox-tls tests/blackbox
note "front door: framing, keep-alive sequences, 9,000 idle connections, slowloris; the services' structure"
BROKER_BIN=$ROOT/build/broker run_pytest "front door" door tests/door
note "TLS: certificates, reload, bad TLS input (ASan+UBSan build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  BROKER_SANITIZED=1 BROKER_BIN=$ROOT/build-asan/broker run_pytest "tls (asan)" tls tests/tls
note "front door chaos: a burst past the relay slots, then a minute of random clients, plain and TLS (ASan+UBSan build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  BROKER_SANITIZED=1 BROKER_BIN=$ROOT/build-asan/broker run_pytest "chaos (asan)" chaos tests/chaos -s
note "certd: network time from chronyd (faketime), certificates from Pebble (real HTTP-01) (ASan+UBSan build)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  BROKER_SANITIZED=1 BROKER_BIN=$ROOT/build-asan/broker run_pytest "certd (asan)" certd tests/certd

note "browser (headless chromium) against the all-in-one broker"
browser_port=$(free_port_block)
build/broker --port=$browser_port --db="$WORK/browser-db" --admin_token=browser-admin \
  --jwt_secret=browser-secret 2>"$WORK/browser-broker.log" &
browser_pid=$!
for _ in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$browser_port/healthz" && break; sleep 0.1; done
BROKER_BROWSER_BASE=http://127.0.0.1:$browser_port BROKER_BROWSER_ADMIN_TOKEN=browser-admin \
  run_pytest "browser: all-in-one" browser tests/browser
kill -TERM $browser_pid; wait $browser_pid 2>/dev/null

note "JS client (Node; headless chromium over fetch and over XHR; the React hook; the npm package) against the all-in-one broker"
BROKER_BIN=$ROOT/build/broker run_pytest "js client" jsclient tests/jsclient

note "web console (headless chromium, selenium)"
BROKER_BIN=$ROOT/build/broker run_pytest "console (browser)" console tests/console

note "operator files (systemd unit, Grafana dashboard, compose with its secrets and CURVE resolved offline), --secure's ports (network namespace), the docs' flags"
BROKER_BIN=$ROOT/build/broker run_pytest "ops: deploy files, ports, doc flags" ops tests/ops

note "split deployment on loopback (auth, ingest, 2 x stream, nginx gateway)"
for attempt in 1 2 3; do   # a port taken between the check and the bind: try another block
  split_port=$(free_port_block)
  rm -f "$WORK/split.ready"
  SPLIT_READY_FILE=$WORK/split.ready GATEWAY_PORT=$split_port BUS_INGEST_PORT=$((split_port + 10)) \
    BUS_AUTH_PORT=$((split_port + 11)) BUS_CERTD_PORT=$((split_port + 12)) DB=$WORK/split-db-$attempt \
    BUS_KEYS=$WORK/split-keys-$attempt scripts/run-split.sh $NO_LIMITS >"$WORK/split.log" 2>&1 &
  split_pid=$!
  for _ in $(seq 1 150); do [ -f "$WORK/split.ready" ] && break; kill -0 $split_pid 2>/dev/null || break; sleep 0.2; done
  [ -f "$WORK/split.ready" ] && break
  kill -TERM $split_pid 2>/dev/null; wait $split_pid 2>/dev/null
  echo "split deployment attempt $attempt did not start; log tail:"; tail -3 "$WORK/split.log"
done
if [ -f "$WORK/split.ready" ]; then
  # tests/split/test_bus_curve.py also probes this deployment's bus ports (CURVE, run-split.sh's default).
  BROKER_SPLIT_GATEWAY=http://127.0.0.1:$split_port BROKER_SPLIT_STREAMS=$((split_port + 3)),$((split_port + 4)) \
    BROKER_SPLIT_INGEST=$((split_port + 2)) BROKER_SPLIT_BUS=$((split_port + 10)),$((split_port + 11)),$((split_port + 12)) \
    BROKER_SPLIT_KEYS=$WORK/split-keys-$attempt run_pytest "split: cross-process" split tests/split
  BROKER_TEST_BASE_URL=http://127.0.0.1:$split_port run_pytest "split: black-box via gateway" split-blackbox tests/blackbox
  BROKER_BROWSER_BASE=http://127.0.0.1:$split_port run_pytest "split: browser via gateway" split-browser tests/browser
else
  echo "split deployment did not start:"; cat "$WORK/split.log"; record "split deployment" 0 1
fi
kill -TERM $split_pid 2>/dev/null; wait $split_pid 2>/dev/null

note "fuzz targets (libFuzzer, ASan+UBSan, 12 s each)"
fuzz_log=$WORK/fuzz.log
tests/fuzz/run.sh 12 >"$fuzz_log" 2>&1
fuzz_rc=$?
fuzz_ok=$(grep -c ', no crash$' "$fuzz_log")
fuzz_bad=$(grep -c ', CRASH ' "$fuzz_log")
cat "$fuzz_log" | tail -20
if [ $fuzz_rc -ne 0 ] && [ "$fuzz_bad" -eq 0 ]; then fuzz_bad=1; fi   # build failure
if [ "$fuzz_ok" -eq 0 ] && [ "$fuzz_bad" -eq 0 ]; then fuzz_bad=1; fi  # ran nothing
record "fuzz" "$fuzz_ok" "$fuzz_bad"

# Where a Docker engine answers, the compose deployment (at the end) runs the black-box suite
# through its gateway on split services over a MongoDB-wire store: the two black-box passes on
# FerretDB below are then what it already covers, and are left to machines without one (the
# store conformance and the faults test run either way).
have_docker=0
docker info >/dev/null 2>&1 && have_docker=1

note "MongoDB backend on a MongoDB-wire server (FerretDB fixture on loopback)"
if fdb_uri=$(tests/ferretdb/start.sh 0 "$WORK/fdb" 2>"$WORK/fdb-start.log" | tail -1) && [ -n "$fdb_uri" ]; then
  echo "FerretDB at $fdb_uri"
  if BROKER_TEST_MONGODB_URI=${fdb_uri}conformance build/test_store >"$WORK/mongo-conformance.log" 2>&1; then :; fi
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$WORK/mongo-conformance.log" | tail -1)
  if grep -q 'mongodb conformance' "$WORK/mongo-conformance.log" && [ -n "$line" ] &&
     ! grep -q 'mongodb conformance: skipped' "$WORK/mongo-conformance.log"; then
    echo "store conformance (SQLite + MongoDB): $line"
    record "mongodb: store conformance" "$(cut -d' ' -f1 <<<"$line")" "$(cut -d' ' -f3 <<<"$line")"
  else
    tail -30 "$WORK/mongo-conformance.log"; record "mongodb: store conformance" 0 1
  fi
  if [ $have_docker = 0 ]; then
    BROKER_TEST_STORE_URI=$fdb_uri BROKER_BIN=$ROOT/build/broker \
      run_pytest "mongodb: black-box (all-in-one)" mongo-blackbox tests/blackbox
  else
    echo "mongodb: black-box (all-in-one): covered by the compose deployment's black-box pass below"
  fi

  for attempt in 1 2 3; do
    mport=$(free_port_block)
    rm -f "$WORK/msplit.ready"
    SPLIT_READY_FILE=$WORK/msplit.ready GATEWAY_PORT=$mport BUS_INGEST_PORT=$((mport + 10)) \
      BUS_AUTH_PORT=$((mport + 11)) BUS_CERTD_PORT=$((mport + 12)) DB=$WORK/msplit-db-$attempt \
      scripts/run-split.sh --store="${fdb_uri}split$attempt" $NO_LIMITS >"$WORK/msplit.log" 2>&1 &
    msplit_pid=$!
    for _ in $(seq 1 150); do [ -f "$WORK/msplit.ready" ] && break; kill -0 $msplit_pid 2>/dev/null || break; sleep 0.2; done
    [ -f "$WORK/msplit.ready" ] && break
    kill -TERM $msplit_pid 2>/dev/null; wait $msplit_pid 2>/dev/null
    echo "split deployment on MongoDB, attempt $attempt did not start; log tail:"; tail -3 "$WORK/msplit.log"
  done
  if [ -f "$WORK/msplit.ready" ]; then
    BROKER_SPLIT_GATEWAY=http://127.0.0.1:$mport BROKER_SPLIT_STREAMS=$((mport + 3)),$((mport + 4)) \
      BROKER_SPLIT_INGEST=$((mport + 2)) run_pytest "mongodb: split cross-process" mongo-split tests/split \
        --ignore=tests/split/test_forwarders.py --ignore=tests/split/test_bus_curve.py \
        --ignore=tests/split/test_presence.py \
        --ignore=tests/split/test_replica_drain.py  # their own processes on the embedded store: once is enough
    if [ $have_docker = 0 ]; then
      BROKER_TEST_BASE_URL=http://127.0.0.1:$mport run_pytest "mongodb: split black-box" mongo-split-blackbox tests/blackbox
    else
      echo "mongodb: split black-box: covered by the compose deployment's black-box pass below"
    fi
  else
    echo "split deployment on MongoDB did not start:"; cat "$WORK/msplit.log"; record "mongodb: split" 0 1
  fi
  kill -TERM $msplit_pid 2>/dev/null; wait $msplit_pid 2>/dev/null
  tests/ferretdb/stop.sh "$WORK/fdb" >/dev/null 2>&1
else
  echo "the FerretDB fixture did not start:"; cat "$WORK/fdb-start.log"; record "mongodb (fixture)" 0 1
fi
note "MongoDB faults: the server stopped and restarted while inserts flow"
BROKER_BIN=$ROOT/build/broker run_pytest "mongodb: faults" mongo-faults tests/mongo

note "helm chart (offline): no Kubernetes cluster runs here; instead helm lint --strict and helm template (Helm from the Go module proxy), every rendered document decoded strictly into the Kubernetes API's types, policy checks over them"
# The tools' build (started at the top) must have succeeded: a failed build is this part failing, once.
if wait $helm_build_pid && helm_tools=$(tail -1 "$WORK/helm-build.out") && [ -n "$helm_tools" ]; then
  grep -E 'built in|up to date' "$WORK/helm-build.log"
  run_pytest "helm chart (offline)" helm tests/helm
else
  tail -30 "$WORK/helm-build.log"; record "helm chart (offline): tools build" 0 1
fi

note "docker-compose: the split deployment on the real Docker engine (images, scale, faults, HTTPS with Pebble)"
# The store link's SCRAM credentials and TLS options pass through the URI to the MongoDB driver
# (--store_password_file puts the password in); the compose deployment's MongoDB-wire stand-in
# runs without authentication or TLS, so that part is not exercised here.
echo "compose: the store link's SCRAM and TLS are not exercised (the MongoDB-wire stand-in runs without them)"
if [ $have_docker = 1 ]; then
  if scripts/images.sh >"$WORK/images.log" 2>&1; then
    grep -E 'MB|images: (base|made|imported)' "$WORK/images.log" | tail -8
    compose_env=$WORK/compose.env
    rm -f "$compose_env"
    # Whatever happens, the deployment and its volumes go away.
    trap '$PY tests/compose/deployment.py down "$compose_env" >/dev/null 2>&1' EXIT
    if $PY tests/compose/deployment.py up "$compose_env"; then
      eval "$($PY -c 'import json,sys; d=json.load(open(sys.argv[1])); print("compose_url=%s compose_admin=%s compose_jwt=%s" % (d["base_url"], d["admin_token"], d["jwt_secret"]))' "$compose_env")"
      BROKER_TEST_COMPOSE=1 BROKER_TEST_BASE_URL=$compose_url BROKER_TEST_ADMIN_TOKEN=$compose_admin \
        BROKER_TEST_JWT_SECRET=$compose_jwt run_pytest "compose: black-box via gateway" compose-blackbox tests/blackbox
      BROKER_COMPOSE_ENV=$compose_env run_pytest "compose: scale, faults, https" compose tests/compose
    else
      record "compose: up" 0 1
    fi
    $PY tests/compose/deployment.py down "$compose_env"
    trap - EXIT
  else
    tail -30 "$WORK/images.log"; record "compose: images" 0 1
  fi
else
  echo "compose: no Docker engine answers on this machine: not run (nothing counted as passed)"
fi

note "results"
printf '%s\n' "${report[@]}"
if [ -s "$FAILED_LIST" ]; then echo "failed tests:"; cat "$FAILED_LIST"; fi
echo "summary: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
