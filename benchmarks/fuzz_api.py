"""A schemathesis campaign against the live service: every operation of the OpenAPI schema, every check.

Indexes the 7-class COCO128 subset with the CLI (as `bench_load.py` does), serves the API under uvicorn on
127.0.0.1 with one queue worker beside it and a write key, then runs schemathesis' own CLI (`st run`) over
`/openapi.json` with `--checks all`, a fixed seed and `--max-examples` per operation (writes included: uploads,
scans, deletes). Prints schemathesis' summary, then the requests per operation and the answers by status code
(from its NDJSON event log), and which operation answered a 5xx, if any. The exit status is schemathesis' own.

    python benchmarks/fuzz_api.py [--max-examples 300] [--seed 20261130] [--root another/checkout]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_load import prepare

from common import ROOT, machine, wait_for_api

KEY = "bench"


def tally(ndjson: Path) -> tuple[Counter, Counter, Counter]:
    """From schemathesis' NDJSON event log: requests per operation, answers by status code, and the 5xx per
    operation."""
    per_op: Counter = Counter()
    codes: Counter = Counter()
    server_errors: Counter = Counter()
    with open(ndjson) as f:
        for line in f:
            event = json.loads(line).get("ScenarioFinished")
            if not event:
                continue
            for case_id, case in event["recorder"].get("cases", {}).items():
                value = case["value"]
                op = f"{value['method']} {value['path']}"
                per_op[op] += 1
                response = event["recorder"].get("interactions", {}).get(case_id, {}).get("response") or {}
                code = response.get("status_code")
                if code is not None:
                    codes[code] += 1
                    if code >= 500:
                        server_errors[op] += 1
    return per_op, codes, server_errors


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    p.add_argument("--max-examples", type=int, default=300, help="examples per operation and phase")
    p.add_argument("--seed", type=int, default=20261130)
    args = p.parse_args()
    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="fuzz_api_"))
    env = prepare(root, work)
    (work / "library").mkdir()
    env.update(API_KEYS=KEY, SCAN_ROOTS=str(work / "library"), WORKER_CONCURRENCY="2")
    port = 20000 + random.randrange(1000)
    url = f"http://127.0.0.1:{port}"
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
                            "warning", "--no-access-log"], cwd=root, env=env, stderr=open(work / "api.log", "w"))
    worker = None
    try:
        wait_for_api(url, api)
        worker = subprocess.Popen([sys.executable, "-m", "clip_embedder.worker"], cwd=root, env=env,
                                  stderr=open(work / "worker.log", "w"))
        print(f"{machine()}\nchecking {url} ({root}), seed {args.seed}, {args.max_examples} examples per operation",
              flush=True)
        ndjson = work / "events.ndjson"
        t = time.perf_counter()
        st = subprocess.run([str(Path(sys.executable).with_name("st")), "run", f"{url}/openapi.json",
                             "--checks", "all", "--seed", str(args.seed), "--max-examples", str(args.max_examples),
                             "-H", f"X-API-Key: {KEY}", "--continue-on-failure", "--request-timeout", "120",
                             "--report", "ndjson", "--report-ndjson-path", str(ndjson), "--no-color"],
                            cwd=work, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True)
        print(st.stdout[-12000:], st.stderr[-3000:])
        per_op, codes, server_errors = tally(ndjson)
        print(f"{sum(per_op.values()):,} requests in {time.perf_counter() - t:.0f} s; answers by status "
              f"{dict(sorted(codes.items()))}; 5xx: {sum(server_errors.values())} {dict(server_errors)}")
        probes = {op: n for op, n in per_op.items() if n == 1}  # one request each: methods a path does not serve
        for op, n in sorted(per_op.items(), key=lambda kv: kv[1]):
            if op not in probes:
                print(f"  {n:6,d}  {op}")
        print(f"  and {len(probes)} probes of methods the paths do not serve (one request each)")
        return st.returncode
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)


if __name__ == "__main__":
    raise SystemExit(main())
