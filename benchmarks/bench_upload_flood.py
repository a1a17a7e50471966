"""Uploads of too many files, in a flood: what they cost the API's event loop and memory.

Serves each checkout's API under uvicorn on 127.0.0.1 (an empty embedded PostgreSQL, no worker needed), then:
1. one valid 1-file upload (time to its 202) and one 500-part upload (time to its 413), alone;
2. `--requests` concurrent POST /api/images of 500 small parts each (~80 kB, all refused with 413), repeated
   `--rounds` times, while a prober in a process of its own asks /api/health every 50 ms.
Prints the time to each 413 (p50/p99), the health latency during the flood (p50/p99/max), the answers by status
and the API's RSS before/after. `--root` (repeatable) names checkouts to compare side by side in one run, e.g. a
`git worktree` of the commit before the change:

    git worktree add /tmp/before <commit>
    python benchmarks/bench_upload_flood.py --root /tmp/before --root .
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import ROOT, SHARED, machine, pct, probe_health, wait_for_api

KEY = "bench"


def serve(root: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """The checkout's API under uvicorn on a free port, on a fresh embedded PostgreSQL under `work`."""

    models = SHARED / "models"
    env = {**os.environ, "PGDATA_DIR": str(work / "pgdata"), "FAISS_DIR": str(work / "faiss"),
           "SPACES": "mobilenet,text", "DETECTOR_WEIGHTS": str(models / "yolov5/yolov5n.pt"),
           "MOBILENET_WEIGHTS": str(models / "mobilenet/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
           "TAGGER_WEIGHTS": str(models / "mobilenet/mobilenet_quant_v1_224_head_layers.tflite"),
           "TAGGER_LABELS": str(models / "mobilenet/imagenet_labels.txt"), "OCR": "off",
           "STORAGE_ROOT": str(work / "originals"), "EXPORT_DIR": str(work / "exported"), "API_KEYS": KEY,
           "PYTHONPATH": str(root)}
    env.pop("DATABASE_URL", None)
    port = 19000 + random.randrange(1000)
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
                            "warning", "--no-access-log"], cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(url, api)
    except RuntimeError:
        api.kill()
        raise
    return api, url


def hostile_body(parts: int) -> tuple[bytes, dict[str, str]]:
    """A multipart body of `parts` tiny "image" parts (100 bytes each) and its Content-Type header."""
    import httpx

    req = httpx.Request("POST", "http://x/api/images",
                        files=[("files", (f"{i}.jpg", b"\xff\xd8" + b"x" * 98, "image/jpeg")) for i in range(parts)])
    return req.read(), {"content-type": req.headers["content-type"], "X-API-Key": KEY}


async def flood(url: str, body: bytes, headers: dict[str, str], requests: int) -> tuple[list[float], Counter]:
    """`requests` concurrent POST /api/images of `body`; the ms to each answer and the answers by status."""
    import httpx

    codes: Counter = Counter()
    times: list[float] = []
    limits = httpx.Limits(max_connections=requests, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as c:
        async def one() -> None:
            t = time.perf_counter()
            try:
                r = await c.post("/api/images", content=body, headers=headers)
                codes[r.status_code] += 1
            except httpx.HTTPError as e:
                codes[type(e).__name__] += 1
            times.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(one() for _ in range(requests)))
    return times, codes


def probe_until(url: str, stop, send, every: float) -> None:
    """In a process of its own: GET /api/health every `every` s until `stop` is set; sends the latencies (ms)."""
    import httpx

    out: list[float] = []
    with httpx.Client(base_url=url, timeout=120) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.get("/api/health")
            out.append((time.perf_counter() - t) * 1000)
            time.sleep(every)
    send.send(out)


def measure(root: Path, requests: int, rounds: int) -> None:
    import httpx
    import psutil

    work = Path(tempfile.mkdtemp(prefix="bench_flood_"))
    api, url = serve(root, work)
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        print(f"\ncheckout {root} ({git.stdout.strip()})")
        photo = sorted((SHARED / "datasets/coco128/images").glob("*.jpg"))[0]
        body, headers = hostile_body(500)
        with httpx.Client(base_url=url, timeout=120) as c:
            t = time.perf_counter()
            one = c.post("/api/images", headers={"X-API-Key": KEY},
                         files=[("files", (photo.name, photo.read_bytes(), "image/jpeg"))])
            t_one = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            many = c.post("/api/images", content=body, headers=headers)
            t_many = (time.perf_counter() - t) * 1000
        print(f"  alone: 1-file upload {one.status_code} in {t_one:.1f} ms; 500-part upload ({len(body) / 1024:.0f} "
              f"kB) {many.status_code} in {t_many:.1f} ms")
        rss0 = psutil.Process(api.pid).memory_info().rss / 2**20
        quiet = probe_health(url, 2.0, 0.05)
        ctx = multiprocessing.get_context("spawn")
        stop, (recv, send) = ctx.Event(), ctx.Pipe(duplex=False)
        prober = ctx.Process(target=probe_until, args=(url, stop, send, 0.05))
        prober.start()
        time.sleep(1.0)  # the prober's interpreter is up
        times: list[float] = []
        codes: Counter = Counter()
        t = time.perf_counter()
        for _ in range(rounds):
            tt, cc = asyncio.run(flood(url, body, headers, requests))
            times += tt
            codes += cc
        seconds = time.perf_counter() - t
        stop.set()
        h = recv.recv()
        prober.join()
        rss1 = psutil.Process(api.pid).memory_info().rss / 2**20
        print(f"  flood: {rounds} x {requests} concurrent 500-part uploads, answers {dict(codes)}, "
              f"{rounds * requests / seconds:.0f} refused/s")
        print(f"  time to the 413: p50={statistics.median(times):.0f} ms p99={pct(times, 99):.0f} ms "
              f"max={max(times):.0f} ms")
        print(f"  /api/health quiet: p50={statistics.median(quiet):.1f} ms; during the flood: n={len(h)} "
              f"p50={statistics.median(h):.1f} ms p99={pct(h, 99):.1f} ms max={max(h):.1f} ms")
        print(f"  API RSS: {rss0:.0f} MB before the flood, {rss1:.0f} MB after (+{rss1 - rss0:.0f} MB)")
    finally:
        api.terminate()
        api.wait(timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, action="append", help="a checkout to serve (repeatable; default: this one)")
    p.add_argument("--requests", type=int, default=200, help="concurrent uploads per flood round")
    p.add_argument("--rounds", type=int, default=3, help="flood rounds, one after the other")
    args = p.parse_args()
    print(machine())
    for root in args.root or [ROOT]:
        measure(root.resolve(), args.requests, args.rounds)


if __name__ == "__main__":
    main()
