"""Reciprocal rank fusion of ranked lists: score(d) = Σ_lists 1 / (k + rank_list(d)) with k = 60 and ranks starting
at 1 (Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet and individual rank learning
methods", SIGIR 2009)."""
from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T", bound=Any)

RRF_K = 60


def rrf_fuse(ranked: dict[str, list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of per-space ranked lists: each key scores sum over lists of 1 / (k + rank).

    Args:
        ranked: space → [(key, similarity)] best first (keys may repeat across spaces).
        k: the RRF constant (60, from Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet
            and individual Rank Learning Methods", SIGIR 2009).

    Returns:
        [(key, fused score)] by descending score; ties broken by the best similarity (rounded to 6 places), then
        key. `space_ranks` gives the per-space detail of the keys a caller keeps (building it for every key cost
        more than the fusion itself: 0.67 against 0.29 ms for two lists of 200).
    """
    fused: dict[int, float] = {}
    best: dict[int, float] = {}
    for lst in ranked.values():
        for rank, (key, sim) in enumerate(lst, start=1):
            score = 1.0 / (k + rank)
            if key in fused:
                fused[key] += score
                if sim > best[key]:
                    best[key] = sim
            else:
                fused[key], best[key] = score, sim
    return [(key, fused[key]) for key in sorted(fused, key=lambda key: (-fused[key], -round(best[key], 6), key))]


def space_ranks(ranked: dict[str, list[tuple[int, float]]], keys: list[int]) -> dict[int, dict[str, dict]]:
    """key → {space: {"rank": 1-based rank in that space's list, "similarity": rounded to 6 places}} for each of
    `keys`, over the spaces whose list holds it (what a hit's `spaces` shows)."""
    out: dict[int, dict[str, dict]] = {key: {} for key in keys}
    for space, lst in ranked.items():
        for rank, (key, sim) in enumerate(lst, start=1):
            if key in out:
                out[key][space] = {"rank": rank, "similarity": round(float(sim), 6)}
    return out


def fuse_top(ranked: dict[str, list[tuple[int, float]]], top_k: int) -> list[tuple[int, float, dict]]:
    """The first `top_k` of `rrf_fuse(ranked)`, each with its `space_ranks`: [(key, fused score, per space)]."""
    top = rrf_fuse(ranked)[:top_k]
    per = space_ranks(ranked, [key for key, _ in top])
    return [(key, score, per[key]) for key, score in top]


def one_per_image(hits: list[T], top_k: int) -> list[T]:
    """The first `top_k` of `hits` (best first) with each image once: a later hit of an image already listed (another
    crop of the same photo) is dropped. `hits` carry an `image_id`."""
    seen: set[int] = set()
    out = []
    for h in hits:
        if h.image_id in seen:
            continue
        seen.add(h.image_id)
        out.append(h)
        if len(out) == top_k:
            break
    return out
