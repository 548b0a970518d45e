#!/usr/bin/env python3
"""Inserts from one client through the compose gateway, which spreads them over the ingest
replicas (so the replicas take turns on one tenant's sequence), then what a new subscriber's
snapshot of all those names costs.

    make images
    python3 bench/compose_turns.py [--inserts 400] [--rounds 2]

Brings up its own deployment (tests/compose/deployment.py: docker-compose.yml with the offline
MongoDB-wire fixture, stream=3, ingest=2) and takes it down at the end. Each round is a fresh
tenant on the same deployment, so later rounds run on a fuller database. Prints, per round: the
mean insert time and the time until the snapshot's response head (the stream service reads the
snapshot before it answers). The fixture is FerretDB on SQLite, which scans where MongoDB uses an
index: the figures compare code paths on it, not what MongoDB would do."""

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "compose"))
sys.path.insert(0, os.path.join(ROOT, "tests", "blackbox"))

from deployment import Deployment, main as deployment_main  # noqa: E402
from sse_client import SSEClient, Timeout  # noqa: E402
from test_compose import Tenant  # noqa: E402


def one_round(dep, n):
    tenant = Tenant(dep)
    t0 = time.monotonic()
    ids = [tenant.insert("e%d" % i, {"n": i}) for i in range(n)]
    insert_s = time.monotonic() - t0
    c = SSEClient.open(dep.base_url, "/sse", headers={"Authorization": "Bearer " + tenant.jwt}, timeout=10)
    try:
        t1 = time.monotonic()
        status = c.read_head(600)
        head_s = time.monotonic() - t1
        got = 0
        while True:
            try:
                c.next_event(10)
            except Timeout:
                break
            got += 1
    finally:
        c.close()
    return {"inserts": n, "failed": ids.count(None), "insert_ms": 1000 * insert_s / n, "status": status,
            "head_s": head_s, "snapshot_events": got}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inserts", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    env_file = os.path.join(tempfile.mkdtemp(prefix="compose-turns-"), "deployment.json")
    try:
        if deployment_main(["", "up", env_file]) != 0:
            return 1
        dep = Deployment.load(env_file)
        print("| round | inserts | failed | mean insert ms | snapshot head s | snapshot events |")
        print("|---|---|---|---|---|---|")
        for r in range(1, args.rounds + 1):
            x = one_round(dep, args.inserts)
            print("| %d | %d | %d | %.0f | %.2f | %d |" % (r, x["inserts"], x["failed"], x["insert_ms"], x["head_s"],
                                                         x["snapshot_events"]), flush=True)
    finally:
        deployment_main(["", "down", env_file])
    return 0


if __name__ == "__main__":
    sys.exit(main())
