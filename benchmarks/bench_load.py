"""Load test over HTTP: concurrent clients mixing text and image searches for a bounded time.

Indexes the 7-class COCO128 subset with a checkout's own CLI, starts that checkout's API under uvicorn
on 127.0.0.1, then for each client count runs closed-loop clients (70 % text, 30 % image searches)
while a prober process times /api/health every 0.2 s. Prints requests/s, p50/p99 per route, answers by status,
health latency under load and the API's peak RSS. `--root` points at another checkout (e.g. a
`git worktree` of an older commit) to compare before / after on the same machine in one run.

    python benchmarks/bench_load.py [--root /tmp/before] [--clients 16,64] [--seconds 20]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import ROOT, SHARED, http_load, pct, wait_for_api

QUERIES = ["car", "person", "handbag", "a red bus", "dog", "traffic light", "bicycle", "book", "a man on a bench"]


def prepare(root: Path, work: Path) -> dict[str, str]:
    coco = SHARED / "datasets" / "coco128"
    env = {**os.environ, "PGDATA_DIR": str(work / "pgdata"), "FAISS_DIR": str(work / "faiss"),
           "SPACES": "mobilenet,text", "DETECTOR_WEIGHTS": str(SHARED / "models/yolov5/yolov5n.pt"),
           "MOBILENET_WEIGHTS": str(SHARED / "models/mobilenet/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"),
           "TAGGER_WEIGHTS": str(SHARED / "models/mobilenet/mobilenet_quant_v1_224_head_layers.tflite"),
           "TAGGER_LABELS": str(SHARED / "models/mobilenet/imagenet_labels.txt"), "OCR": "off",
           "STORAGE_ROOT": str(work / "originals"), "EXPORT_DIR": str(work / "exported"), "API_KEYS": "bench",
           "PYTHONPATH": str(root)}
    env.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, "scripts/extract_coco_subset.py", "--annotations",
                          str(coco / "annotations/instances_coco128_train2017.json"), "--images", str(coco / "images"),
                          "--output", str(work / "subset"), "--no-progress"],
                         cwd=root, env=env, capture_output=True, text=True, check=True)
    # the last line names the version folder ("up to date: <path> …" on a re-run), as scripts/demo.sh reads it
    dataset = re.sub(r"^(up to date: )?([^: ]+).*", r"\2", out.stdout.strip().splitlines()[-1])
    subprocess.run([sys.executable, "-m", "clip_embedder.scripts.embed_and_index", "--split", "all",
                    "--dataset_path", dataset, "--no-progress"], cwd=root, env=env, check=True,
                   capture_output=True)
    env["DATASET"] = dataset
    return env


async def run_load(url: str, images: list[bytes], clients: int, seconds: float) -> dict:
    """70 % text searches (QUERIES), 30 % image searches (`images`), health probed every 0.2 s."""
    async def request(c, rnd: random.Random):
        if rnd.random() < 0.7:
            return "search_text", await c.get("/api/search_text", params={"query": rnd.choice(QUERIES), "top_k": 10})
        return "search_image", await c.post("/api/search_image", params={"top_k": 10},
                                            files={"file": ("q.jpg", rnd.choice(images), "image/jpeg")})

    return await http_load(url, request, clients, seconds, health_every=0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout to serve (default: this one)")
    p.add_argument("--clients", default="16,64")
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    import psutil

    root = args.root.resolve()
    work = Path(tempfile.mkdtemp(prefix="bench_load_"))
    env = prepare(root, work)
    port = 18000 + random.randrange(1000)
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
                            "warning", "--no-access-log"], cwd=root, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_api(url, api, seconds=120)
        images = [p.read_bytes() for p in sorted((SHARED / "datasets/coco128/images").glob("*.jpg"))[:8]]
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        print(f"checkout {root} ({git.stdout.strip()}), {args.seconds:.0f}s per run, 70% text / 30% image")
        for n in [int(x) for x in args.clients.split(",")]:
            res = asyncio.run(run_load(url, images, n, args.seconds))
            total = sum(res["codes"].values())
            rss = psutil.Process(api.pid).memory_info().rss / 2**20
            answers = dict(sorted(res["codes"].items(), key=str))
            print(f"clients={n}: {total / res['wall']:.1f} req/s, answers {answers}")
            for route, v in sorted(res["lat"].items()):
                print(f"  {route:13s} n={len(v):5d} p50={statistics.median(v):8.1f} ms p99={pct(v, 99):8.1f} ms")
            h = res["health"]
            print(f"  /api/health under load: n={len(h)} p50={statistics.median(h):.1f} ms p99={pct(h, 99):.1f} ms "
                  f"max={max(h):.1f} ms")
            print(f"  API RSS after the run: {rss:.0f} MB")
        with open(f"/proc/{api.pid}/status") as f:
            hwm = next(line for line in f if line.startswith("VmHWM")).split()[1]
        print(f"API peak RSS (VmHWM): {int(hwm) / 1024:.0f} MB")
    finally:
        api.terminate()
        api.wait(timeout=60)


if __name__ == "__main__":
    main()
