"""The API at a million items, end to end over HTTP: start-up, memory, text-search latency, health under load.

Fills the project's own tables (the real schema, migrations applied) with `--items` synthetic items: images of
10 items each (the whole image + 9 objects) whose labels come from COCO's 80 classes in 500 two-class themes,
with the descriptions and lexical keywords the pipeline would write, and `text`-space vectors placed around the
real MiniLM embedding of each item's description (so text queries find meaningful neighbours and the vectors
cluster as real ones do), with PGVECTOR_INDEX=none (the API never uses pgvector's own HNSW index, and maintaining
it for a million inserts would take longer than everything else here). Then, against the API
under uvicorn (`SPACES=text`, `FAISS_INDEX=auto` → IVF1024,SQ8):

1. cold start (no FAISS file: vectors streamed out of PostgreSQL, an exact index answering at once, the
   approximate one built in the background): seconds to the first answer and to the approximate index, RSS;
2. text-search latency over HTTP, one query at a time, 200 distinct queries (nothing memoised);
3. `--clients` concurrent clients for `--seconds` (queries drawn from 400, repeats hit the query memo):
   requests/s, p50/p99, and `/api/health` timed every 0.1 s meanwhile by a prober process of its own;
4. warm start (the FAISS file the API saved at shutdown, loaded without a rebuild).

    python benchmarks/bench_http_scale.py [--items 1000000] [--clients 8] [--seconds 20] [--work DIR] [--root DIR]

`--work DIR` keeps the database between runs (filling a million items takes minutes; a second run reuses it).
`--root DIR` serves another checkout's API (e.g. a `git worktree` of an older commit) under this script's own load
generator, so before / after compare on the same machine, database and measurement.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, SHARED, http_load, machine, pct

THEMES = 500
PER_IMAGE = 10
NOISE = 0.025  # per dimension: a noise vector of norm ~0.5 around each description's unit embedding
ADJECTIVES = ["a", "a red", "two", "a small", "an old"]


def api_env(work: Path, root: Path = ROOT) -> dict[str, str]:
    env = {**os.environ, "PGDATA_DIR": str(work / "pgdata"), "FAISS_DIR": str(work / "faiss"), "SPACES": "text",
           "DETECTOR_WEIGHTS": str(SHARED / "models/yolov5/yolov5n.pt"), "TAGGER": "off", "OCR": "off",
           "STORAGE_ROOT": str(work / "originals"), "EXPORT_DIR": str(work / "exported"), "API_KEYS": "bench",
           "PGVECTOR_INDEX": "none",
           "PYTHONPATH": str(root)}
    env.pop("DATABASE_URL", None)
    return env


def fill(work: Path, n_items: int) -> list[str]:
    """Fill the tables (unless they already hold `n_items`); returns the 80 labels."""
    from clip_embedder.config import Settings
    from clip_embedder.db.copy_codec import PGCOPY_SIGNATURE, encode_copy_rows
    from clip_embedder.db.store import Store
    from clip_embedder.indexing.describe import describe_image, describe_object
    from clip_embedder.models.embedders import create_embedder
    from clip_embedder.models.tagger import label_words

    cats = json.loads((SHARED / "datasets/coco128/annotations/instances_coco128_train2017.json").read_text())
    labels = [c["name"] for c in sorted(cats["categories"], key=lambda c: c["id"])]
    # PGVECTOR_INDEX=none: pgvector's own HNSW index is not used by the API (FAISS serves); inserting a million
    # vectors into it takes longer than the whole benchmark on 2 cores
    s = Settings(_env_file=None, pgdata_dir=work / "pgdata", faiss_dir=work / "faiss", spaces=["text"],
                 database_url=None, export_dir=work / "exported", pgvector_index="none")
    store = Store.open(s)
    try:
        text = create_embedder("text", s).load()
        store.spaces.ensure(text.identity)
        count, _ = store.vectors.watermark("text")
        if count == n_items:
            print(f"tables already hold {count:,} items (reused)")
            return labels
        if count:
            raise SystemExit(f"{work} holds {count:,} items, not {n_items:,}: use another --work folder")
        rng = np.random.default_rng(0)
        theme_a = rng.integers(0, len(labels), THEMES)
        theme_b = (theme_a + 1 + rng.integers(0, len(labels) - 1, THEMES)) % len(labels)
        obj_desc = [describe_object(x) for x in labels]
        img_desc = [describe_image([labels[a]] * 5 + [labels[b]] * 4) for a, b in zip(theme_a, theme_b)]
        img_kw = [f"{label_words(labels[a])} {label_words(labels[b])}" for a, b in zip(theme_a, theme_b)]
        obj_vec, img_vec = text.embed_texts(obj_desc), text.embed_texts(img_desc)
        n_images = n_items // PER_IMAGE
        t0 = time.perf_counter()
        with store.conn() as c:
            c.execute("SET LOCAL maintenance_work_mem = '1GB'")
            for ix in ("items_lexical", "items_label", "items_image_id"):  # bulk load, then index once
                c.execute(f"DROP INDEX IF EXISTS {ix}")

            c.execute("INSERT INTO images (id, sha256, path, storage, file_name, width, height, description, "
                      "detector_sha256, ocr_text) SELECT j, lpad(to_hex(j), 64, '0'), '/synthetic/' || j || '.jpg', "
                      "'file', j || '.jpg', 640, 480, (%s::text[])[((j - 1) %% %s) + 1], 'synthetic', '' "
                      "FROM generate_series(1, %s) j", (img_desc, THEMES, n_images))
            # item i: image (i-1)/10+1, position p=(i-1)%10 (0 = the whole image), theme t, label a (odd p) / b
            c.execute(
                "INSERT INTO items (id, image_id, kind, label, score, x1, y1, x2, y2, crop_x1, crop_y1, crop_x2, "
                "crop_y2, description, keywords) "
                "SELECT i, (i - 1) / 10 + 1, CASE WHEN p = 0 THEN 'image' ELSE 'object' END, "
                "CASE WHEN p = 0 THEN NULL ELSE (%(labels)s::text[])[k + 1] END, "
                "CASE WHEN p = 0 THEN NULL ELSE 0.5 END, 0, 0, 64, 64, 0, 0, 64, 64, "
                "CASE WHEN p = 0 THEN (%(img_desc)s::text[])[t + 1] ELSE (%(obj_desc)s::text[])[k + 1] END, "
                "CASE WHEN p = 0 THEN (%(img_kw)s::text[])[t + 1] ELSE (%(obj_kw)s::text[])[k + 1] END "
                "FROM (SELECT i, (i - 1) %% 10 AS p, ((i - 1) / 10) %% %(themes)s AS t, "
                "CASE WHEN (i - 1) %% 2 = 1 THEN (%(a)s::int[])[((i - 1) / 10) %% %(themes)s + 1] "
                "ELSE (%(b)s::int[])[((i - 1) / 10) %% %(themes)s + 1] END AS k "
                "FROM generate_series(1, %(n)s) i) g",
                {"labels": labels, "img_desc": img_desc, "obj_desc": obj_desc, "img_kw": img_kw,
                 "obj_kw": [label_words(x) for x in labels], "themes": THEMES, "a": theme_a.tolist(),
                 "b": theme_b.tolist(), "n": n_images * PER_IMAGE})
            print(f"images and items inserted in {time.perf_counter() - t0:.1f}s", flush=True)
            t = time.perf_counter()
            with c.cursor() as cur, cur.copy("COPY vectors_text (item_id, embedding) FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(PGCOPY_SIGNATURE + bytes(8))
                for start in range(1, n_images * PER_IMAGE + 1, 100_000):
                    ids = np.arange(start, min(start + 100_000, n_images * PER_IMAGE + 1), dtype=np.int64)
                    p, th = (ids - 1) % PER_IMAGE, ((ids - 1) // PER_IMAGE) % THEMES
                    k = np.where((ids - 1) % 2 == 1, theme_a[th], theme_b[th])
                    base = np.where((p == 0)[:, None], img_vec[th], obj_vec[k])
                    v = base + NOISE * rng.standard_normal(base.shape).astype(np.float32)
                    cp.write(encode_copy_rows(ids, (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)))
                cp.write(b"\xff\xff")
            print(f"vectors copied in {time.perf_counter() - t:.1f}s", flush=True)
            t = time.perf_counter()
            c.execute("CREATE INDEX items_image_id ON items (image_id)")
            c.execute("CREATE INDEX items_label ON items (label)")
            c.execute("CREATE INDEX items_lexical ON items USING gin (lexical)")
            c.execute("SELECT setval('images_id_seq', %s), setval('items_id_seq', %s)", (n_images, n_items))
            print(f"indexes built in {time.perf_counter() - t:.1f}s", flush=True)
        with store.conn() as c:
            c.execute("ANALYZE")
        print(f"filled {n_items:,} items ({n_images:,} images) in {time.perf_counter() - t0:.1f}s")
        return labels
    finally:
        store.close()


def start_api(env: dict[str, str], port: int, timeout: float = 1200, root: Path = ROOT
              ) -> tuple[subprocess.Popen, float]:
    """Start uvicorn; return it and the seconds until /api/health answered 200."""
    import httpx

    t = time.perf_counter()
    api = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port), "--log-level",
                            "warning", "--no-access-log"], cwd=root, env=env)
    while time.perf_counter() - t < timeout:
        if api.poll() is not None:
            raise SystemExit(f"the API exited with {api.returncode} during start-up")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=5).status_code == 200:
                return api, time.perf_counter() - t
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    api.kill()
    raise SystemExit("the API did not start in time")


def stop_api(api: subprocess.Popen) -> None:
    api.send_signal(signal.SIGTERM)  # the lifespan saves the FAISS files
    try:
        api.wait(timeout=300)
    except subprocess.TimeoutExpired:
        api.kill()


def rss_mb(pid: int) -> tuple[float, float]:
    with open(f"/proc/{pid}/status") as f:
        status = {line.split(":")[0]: line.split()[1] for line in f if line.startswith(("VmRSS", "VmHWM"))}
    return int(status["VmRSS"]) / 1024, int(status["VmHWM"]) / 1024


async def load(url: str, queries: list[str], clients: int, seconds: float) -> dict:
    """Text searches of random `queries` (top_k 10), health probed every 0.1 s."""
    async def request(c, rnd: random.Random):
        return "search_text", await c.get("/api/search_text", params={"query": rnd.choice(queries), "top_k": 10})

    return await http_load(url, request, clients, seconds, health_every=0.1, timeout=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--work", type=Path, default=None, help="keep the database here (reused when it is full)")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout whose API is served (default: this one)")
    args = p.parse_args()
    import httpx

    work = (args.work or Path(tempfile.mkdtemp(prefix="bench_http_scale_"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}\nitems: {args.items:,} in the project's tables ({work})")
    root = args.root.resolve()
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    print(f"API served from {root} ({git.stdout.strip() or 'not a git checkout'})")
    labels = fill(work, args.items)
    env = api_env(work, root)
    queries = [f"{adj} {label}" for label in labels for adj in ADJECTIVES]
    random.Random(0).shuffle(queries)
    port = 18000 + random.randrange(1000)
    url = f"http://127.0.0.1:{port}"
    shutil.rmtree(work / "faiss", ignore_errors=True)
    api, cold = start_api(env, port, root=root)
    try:
        rss, _ = rss_mb(api.pid)
        space = httpx.get(f"{url}/api/health", timeout=30).json()["spaces"]["text"]
        print(f"cold start (no FAISS file): {cold:.1f}s to the first healthy answer (exact search meanwhile); API RSS "
              f"{rss:.0f} MB; text space: {space['vectors']:,} vectors, FAISS: {space['faiss']}")
        t = time.perf_counter()
        while "builds in the background" in space["faiss"] and time.perf_counter() - t < 1800:
            time.sleep(0.5)
            space = httpx.get(f"{url}/api/health", timeout=30).json()["spaces"]["text"]
        rss, _ = rss_mb(api.pid)
        print(f"approximate index in place {cold + time.perf_counter() - t:.1f}s after the start; API RSS {rss:.0f} "
              f"MB; FAISS: {space['faiss']}")
        with httpx.Client(base_url=url, timeout=60) as c:
            c.get("/api/search_text", params={"query": "warm-up", "top_k": 10})
            ms, took = [], []
            for q in queries[:200]:
                t = time.perf_counter()
                r = c.get("/api/search_text", params={"query": q, "top_k": 10})
                ms.append((time.perf_counter() - t) * 1000)
                took.append(r.json()["took_ms"])
        print(f"text search, one at a time, 200 distinct queries: p50 {pct(ms, 50):.1f} ms p99 {pct(ms, 99):.1f} ms "
              f"over HTTP (in the service: p50 {pct(took, 50):.1f} ms p99 {pct(took, 99):.1f} ms)")
        res = asyncio.run(load(url, queries, args.clients, args.seconds))
        lat, h = res["lat"]["search_text"], res["health"]
        print(f"{args.clients} concurrent clients, {args.seconds:.0f}s: {len(lat) / res['wall']:.1f} requests/s, "
              f"p50 {pct(lat, 50):.1f} ms p99 {pct(lat, 99):.1f} ms, answers {dict(res['codes'])}")
        print(f"/api/health meanwhile: n={len(h)} p50 {statistics.median(h):.1f} ms p99 {pct(h, 99):.1f} ms "
              f"max {max(h):.1f} ms")
        rss, hwm = rss_mb(api.pid)
        print(f"API RSS after the load: {rss:.0f} MB (peak {hwm:.0f} MB)")
    finally:
        stop_api(api)
    api, warm = start_api(env, port, root=root)
    try:
        rss, _ = rss_mb(api.pid)
        print(f"warm start (the saved FAISS file): {warm:.1f}s; API RSS {rss:.0f} MB")
    finally:
        stop_api(api)


if __name__ == "__main__":
    main()
