"""Indexing throughput (images/s, seconds per stage) and HTTP search latency (p50/p99).

Indexes a COCO subset (default: the 7-class subset of ../shared COCO128, 74 images) into a fresh
embedded PostgreSQL, starts the API under uvicorn, and times text and image queries over HTTP.

    python benchmarks/bench_index_search.py [--dataset datasets/coco_subset/version_1] [--queries 50]
"""
from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from common import bench_parser, bench_settings, ensure_subset, machine, pct, peak_rss_mb


def main() -> None:
    p = bench_parser(__doc__)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=16)
    args = p.parse_args()

    import httpx
    import uvicorn

    from api.main import create_app
    from clip_embedder.db.store import Store
    from clip_embedder.indexing.faiss_index import SpaceIndex
    from clip_embedder.indexing.pipeline import Indexer
    from clip_embedder.models.detector import load_detector
    from clip_embedder.models.embedders import create_embedder

    work = Path(tempfile.mkdtemp(prefix="bench_"))
    dataset = ensure_subset(args.dataset, work)
    s = bench_settings(work, args.spaces, args.clip_pretrained, args.clip_config)
    files = [(f, sp) for sp in ("train", "val", "test") for f in sorted((dataset / sp / "images").glob("*"))]
    print(f"machine: {machine()}")
    print(f"dataset: {dataset} ({len(files)} images), spaces: {s.spaces}, imgsz {s.detector_imgsz}")

    t = time.perf_counter()
    detector = load_detector(s)
    embedders = {name: create_embedder(name, s).load() for name in s.spaces}
    store = Store.open(s)
    for e in embedders.values():
        store.spaces.ensure(e.identity)
    print(f"model load: {time.perf_counter() - t:.2f}s")
    stats = Indexer.from_settings(s, store, detector, embedders).run(files, batch_size=args.batch_size,
                                                                    progress=False)
    t = time.perf_counter()
    for e in embedders.values():
        SpaceIndex.load_or_build(store, e.identity, s.faiss_dir)
    faiss_s = time.perf_counter() - t
    print(f"indexing: {stats.summary()}")
    print(f"indexing: {stats.indexed / stats.seconds:.2f} images/s, "
          f"{(stats.indexed + stats.objects) / stats.seconds:.1f} items/s, FAISS build {faiss_s:.2f}s")
    per_img = {k: 1000 * v / max(1, stats.indexed) for k, v in stats.timings.items()}
    print("per image (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in per_img.items()))
    # pgvector's HNSW (approximate) against FAISS flat (exact): recall@10 over 100 queries per space
    for space, e in embedders.items():
        ix = SpaceIndex.load_or_build(store, e.identity, s.faiss_dir)
        ids, vecs = next(store.vectors.stream(space, batch=100))
        exact_d, _ = ix.search(vecs, 10)
        hits, ms = 0, []
        with store.conn() as c:
            c.execute("SET LOCAL hnsw.ef_search = 40")  # pgvector's default
            for q, ex in zip(vecs, exact_d):
                t = time.perf_counter()
                rows = c.execute(f"SELECT 1 - (embedding <=> %s) AS sim FROM vectors_{space} "
                                 "ORDER BY embedding <=> %s LIMIT 10", (q, q)).fetchall()
                ms.append((time.perf_counter() - t) * 1000)
                # tie-aware: a result is correct when it is at least as close as the exact 10th neighbour
                # (many items share a description, so their text vectors are identical)
                hits += sum(r["sim"] >= ex[-1] - 1e-5 for r in rows)
        print(f"pgvector HNSW recall@10 vs exact ({space}, tie-aware): {hits / (10 * len(vecs)):.3f}, "
              f"p50 {pct(ms, 50):.2f} ms per query in SQL")
        hnsw = SpaceIndex.load_or_build(store, e.identity, work / "faiss_hnsw", "HNSW32", 128)
        t = time.perf_counter()
        approx_d, _ = hnsw.search(vecs, 10)
        per_q = (time.perf_counter() - t) * 1000 / len(vecs)
        rec = float(np.mean(approx_d >= exact_d[:, -1:] - 1e-5))
        print(f"FAISS HNSW32 recall@10 vs exact ({space}, tie-aware): {rec:.3f}, {per_q:.3f} ms per query")
    store.close()

    server = uvicorn.Server(uvicorn.Config(create_app(s), host="127.0.0.1", port=8765, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    while not server.started:
        time.sleep(0.1)
    words = ["handbag", "car", "person", "book", "laptop", "cell phone", "sports ball", "a dog", "umbrella", "bus"]
    with httpx.Client(base_url="http://127.0.0.1:8765", timeout=120) as c:
        c.get("/api/search_text", params={"query": "warm up"})
        text_ms = []
        for i in range(args.queries):
            t = time.perf_counter()
            c.get("/api/search_text", params={"query": words[i % len(words)], "top_k": 10}).raise_for_status()
            text_ms.append((time.perf_counter() - t) * 1000)
        image_ms = []
        for i in range(args.queries):
            f = files[i % len(files)][0]
            t = time.perf_counter()
            c.post("/api/search_image", params={"top_k": 10},
                   files={"file": (f.name, f.read_bytes(), "image/jpeg")}).raise_for_status()
            image_ms.append((time.perf_counter() - t) * 1000)
    server.should_exit = True
    serving.join(120)  # the lifespan's shutdown (FAISS saved, the store closed) ends before the interpreter's exit
    for name, v in (("text ", text_ms), ("image", image_ms)):
        print(f"search_{name} over HTTP: n={len(v)} p50={pct(v, 50):.1f} ms p99={pct(v, 99):.1f} ms "
              f"mean={statistics.mean(v):.1f} ms")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
