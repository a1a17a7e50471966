"""Reciprocal rank fusion and the per-space detail of the keys kept."""
from __future__ import annotations

import pytest

from clip_embedder.search.fusion import fuse_top, rrf_fuse, space_ranks


def test_rrf_fuse():
    fused = rrf_fuse({"a": [(1, 0.9), (2, 0.8)], "b": [(2, 0.7), (3, 0.6)]})
    assert [k for k, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)
    assert space_ranks({"a": [(1, 0.9), (2, 0.8)], "b": [(2, 0.7)]}, [2]) == {
        2: {"a": {"rank": 2, "similarity": 0.8}, "b": {"rank": 1, "similarity": 0.7}}}


def test_rrf_fuse_orders_as_the_per_key_detail_did():
    """The fusion without per-key detail (built only for the keys kept) orders and scores exactly as the former
    one-pass version that built it for every key, ties on score and similarity included."""
    import random

    def reference(ranked, k=60):
        fused, per = {}, {}
        for space, lst in ranked.items():
            for rank, (key, sim) in enumerate(lst, start=1):
                fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
                per.setdefault(key, {})[space] = {"rank": rank, "similarity": round(float(sim), 6)}
        best = {key: max(v["similarity"] for v in per[key].values()) for key in per}
        return [(key, fused[key], per[key]) for key in sorted(fused, key=lambda key: (-fused[key], -best[key], key))]

    rnd = random.Random(0)
    for _ in range(50):
        ranked = {}
        for space in ("text", "clip", "lexical")[:rnd.randint(1, 3)]:
            keys = rnd.sample(range(60), rnd.randint(0, 40))
            sims = sorted((round(rnd.random(), rnd.choice((2, 7))) for _ in keys), reverse=True)  # ties
            ranked[space] = list(zip(keys, sims))
        want = reference(ranked)
        assert fuse_top(ranked, len(want) + 5) == want
        assert [(key, score) for key, score, _ in want] == rrf_fuse(ranked)
        assert fuse_top(ranked, 3) == want[:3]
