"""FAISS: a derived, rebuildable index per embedding space, keyed by database item ids.

Each space is saved as `<faiss_dir>/<space>.faiss` (an `IndexIDMap2` over exact inner-product
search: vectors are L2-normalised, so scores are cosine similarities) and `<space>.json`
(the space identity and the watermark: row count and max item id at build time). At load the
file is checked against Postgres; a missing, unreadable, stale or foreign file is rebuilt from
the `vectors_<space>` table. Losing the files loses nothing.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

from clip_embedder.db.store import Store
from clip_embedder.indexing.faiss_tools import (
    SINGLE_THREAD_QUERIES,
    RWLock,
    atomic_write,
    ids_fingerprint,
    index_ids,
    ivf_of,
    min_train_size,
    remove_orphan_tmp,
    train_untrained,
)
from clip_embedder.models.embedders import SpaceIdentity

log = logging.getLogger(__name__)
SELECTOR_CACHE = 32  # id filters kept per space (kind x label combinations), least recently used dropped
faiss: Any = _faiss  # its SWIG stubs miss most of the API (SearchParametersHNSW, IDSelector fields)


class SpaceIndex:
    """The FAISS index of one space plus the per-vector metadata used by filters.

    Searches may run in many threads while `sync` applies a worker's writes (a readers-writer lock).

    Attributes:
        identity: the space identity. index: `faiss.IndexIDMap2`. meta: `VectorRepository.item_meta` arrays.
        rebuilt: why the index was rebuilt at load ("" when the saved file was current).
    """

    def __init__(self, identity: SpaceIdentity, index: _faiss.Index, meta: dict[str, np.ndarray], rebuilt: str = "",
                 ef_search: int = 128, index_type: str = "Flat", nprobe: int = 16):
        self.identity, self.meta, self.rebuilt = identity, meta, rebuilt
        self._order_cache: tuple[dict[str, np.ndarray], np.ndarray | None] | None = None
        self.index: Any = index
        self.ef_search, self.index_type, self.nprobe = ef_search, index_type, nprobe
        inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
        self.hnsw = isinstance(inner, faiss.IndexHNSW)
        self.ivf = ivf_of(inner) is not None
        self._selectors: OrderedDict[tuple, _faiss.IDSelector] = OrderedDict()
        self._selectors_lock = threading.Lock()
        self.lock = RWLock()
        self.max_id = int(meta["ids"].max()) if len(meta["ids"]) else 0
        self.dirty = False  # changed in memory since it was saved
        self.upgrade: threading.Thread | None = None  # a background build of the configured type, when one runs

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @staticmethod
    def paths(faiss_dir: Path, space: str) -> tuple[Path, Path]:
        return Path(faiss_dir) / f"{space}.faiss", Path(faiss_dir) / f"{space}.json"

    @classmethod
    def build(cls, store: Store, identity: SpaceIdentity, faiss_dir: Path, reason: str = "built",
              base: _faiss.Index | None = None, after_id: int = 0, index_type: str = "Flat",
              ef_search: int = 128, nprobe: int = 16, save: bool = True) -> "SpaceIndex":
        """Build from Postgres (or extend `base` with the vectors whose id > `after_id`) and save atomically.

        `index_type` is a FAISS factory string for the inner index ("Flat", "HNSW32", "IVF1024,Flat",
        "IVF1024,PQ48", …), inner product. An index that needs training (IVF, PQ) is trained on a random
        sample of the space's vectors (`TRAIN_SAMPLE`), so the whole space is read into memory first.
        `save=False` keeps it in memory only (a stopgap while another type builds).

        Raises:
            ValueError: an index that needs training and a space with fewer vectors than its lists.
        """
        t0 = time.perf_counter()
        index = base if base is not None else faiss.IndexIDMap2(
            faiss.index_factory(identity.dim, index_type, faiss.METRIC_INNER_PRODUCT))
        batches: Iterable[tuple[np.ndarray, np.ndarray]] = store.vectors.stream(identity.name, after_id=after_id)
        if not index.is_trained:
            batches = list(batches)
            train_untrained(index, np.vstack([v for _, v in batches]) if batches
                            else np.zeros((0, identity.dim), np.float32))
        for ids, vecs in batches:
            index.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids)
        if save:
            count, max_id = store.vectors.watermark(identity.name)
            idx_path, meta_path = cls.paths(faiss_dir, identity.name)
            atomic_write(idx_path, lambda p: faiss.write_index(index, p))
            atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(
                {"identity": asdict(identity), "index_type": index_type, "count": count, "max_id": max_id,
                 "ntotal": int(index.ntotal), "dim": int(index.d), "ids_sha256": ids_fingerprint(index_ids(index)),
                 "built_at": time.time()}, indent=2)))
        log.info("FAISS %s: %s, %d vectors in %.2fs", identity.name, reason, index.ntotal, time.perf_counter() - t0)
        return cls(identity, index, store.vectors.item_meta(identity.name), rebuilt=reason, ef_search=ef_search,
                   index_type=index_type, nprobe=nprobe)

    @classmethod
    def load_or_build(cls, store: Store, identity: SpaceIdentity, faiss_dir: Path, index_type: str = "Flat",
                      ef_search: int = 128, nprobe: int = 16, background: bool = False) -> "SpaceIndex":
        """Load the saved index when it matches Postgres (identity and watermark); extend it when Postgres
        only gained rows since (appended ids above the saved max id); else rebuild it.

        `background=True` (the API): a rebuild of an index slower to build than exact Flat (HNSW, IVF) returns
        an exact Flat index at once (seconds: the vectors streamed by COPY) and builds the requested type in a
        thread (`upgrade`), swapped in when done and saved; searches meanwhile are exact, and slower.

        The file itself is checked, not only its JSON: its dimension against the space, the sha256 of its
        ids against the one saved beside it, and (when loaded as is) against the ids in Postgres; a file of
        another space, or one swapped under its JSON, is rebuilt. Temp files of killed writes are removed.
        """
        idx_path, meta_path = cls.paths(faiss_dir, identity.name)
        if remove_orphan_tmp(faiss_dir, identity.name):
            log.info("FAISS %s: removed temp files of an interrupted write", identity.name)
        reason = ""
        if not idx_path.exists() or not meta_path.exists():
            reason = "missing"
        else:
            try:
                saved = json.loads(meta_path.read_text())
                index = faiss.read_index(str(idx_path))
                count, max_id = store.vectors.watermark(identity.name)
                if SpaceIdentity(**saved["identity"]) != identity:
                    reason = "built by another model"
                elif index.d != identity.dim:
                    reason = f"foreign file (dim {index.d}, the space has {identity.dim})"
                elif saved.get("ids_sha256") != ids_fingerprint(index_ids(index)):
                    reason = "foreign file (its ids differ from the ones saved beside it)"
                elif saved.get("index_type", "Flat") != index_type:
                    reason = f"index type {saved.get('index_type', 'Flat')} → {index_type}"
                elif (saved["count"], saved["max_id"], saved["ntotal"]) != (count, max_id, index.ntotal):
                    reason = f"stale ({saved['count']} saved vs {count} in Postgres)"
                    if saved["ntotal"] == index.ntotal == saved["count"] and count > saved["count"] and \
                            store.vectors.count_upto(identity.name, saved["max_id"]) == saved["count"]:
                        return cls.build(store, identity, faiss_dir, reason=f"extended: {reason}", base=index,
                                         after_id=saved["max_id"], index_type=index_type, ef_search=ef_search,
                                         nprobe=nprobe)
            except Exception as e:  # unreadable / truncated file
                reason = f"unreadable ({type(e).__name__})"
        if not reason:
            meta = store.vectors.item_meta(identity.name)
            if ids_fingerprint(meta["ids"]) == ids_fingerprint(index_ids(index)):
                return cls(identity, index, meta, ef_search=ef_search, index_type=index_type, nprobe=nprobe)
            reason = "its ids differ from Postgres"
        if background and index_type != "Flat":
            ix = cls.build(store, identity, faiss_dir, reason=f"rebuilt: {reason}; exact Flat while {index_type} "
                           "builds in the background", ef_search=ef_search, nprobe=nprobe, save=False)
            ix.upgrade_in_background(store, faiss_dir, index_type, reason=f"rebuilt: {reason}")
            return ix
        return cls.build(store, identity, faiss_dir, reason=f"rebuilt: {reason}", index_type=index_type,
                         ef_search=ef_search, nprobe=nprobe)

    def upgrade_in_background(self, store: Store, faiss_dir: Path, index_type: str, reason: str) -> threading.Thread:
        """Build `index_type` from Postgres in a thread (saved as `build` saves), then swap it in under the write
        lock and catch up with writes made meanwhile (`sync`). The thread is `self.upgrade`; a failed build is
        logged and leaves the exact index serving."""
        def run() -> None:
            t = time.perf_counter()
            try:
                new = SpaceIndex.build(store, self.identity, faiss_dir, reason=f"{reason} (background)",
                                       index_type=index_type, ef_search=self.ef_search, nprobe=self.nprobe)
            except Exception as e:
                log.error("FAISS %s: building %s in the background failed (%s); exact search goes on",
                          self.identity.name, index_type, e)
                self.rebuilt += f"; the {index_type} build failed ({type(e).__name__})"
                return
            with self.lock.write():
                self.index, self.meta, self.index_type = new.index, new.meta, index_type
                self.hnsw, self.ivf, self.max_id = new.hnsw, new.ivf, new.max_id
                with self._selectors_lock:
                    self._selectors.clear()
                self.rebuilt = f"{reason}: {index_type} built in the background in {time.perf_counter() - t:.1f}s"
            self.sync(store)  # writes and deletes that arrived while it was built

        self.upgrade = threading.Thread(target=run, daemon=True, name=f"faiss-build-{self.identity.name}")
        self.upgrade.start()
        return self.upgrade

    @classmethod
    def for_settings(cls, store: Store, identity: SpaceIdentity, settings, background: bool = False) -> "SpaceIndex":
        """`load_or_build` with FAISS_DIR, FAISS_INDEX, FAISS_EF_SEARCH and FAISS_NPROBE from the settings.

        FAISS_INDEX=auto picks by the space's size when the index is loaded or rebuilt: exact `Flat` up to
        FAISS_APPROX_ABOVE vectors, FAISS_LARGE_INDEX (IVF1024,SQ8) above (a saved index of the other type is
        rebuilt once). An index growing past the threshold while the API runs stays as it is until the next
        start or reload. An index that needs training is Flat while the space is too small to train it.
        """
        index_type = settings.faiss_index
        count, _ = store.vectors.watermark(identity.name)
        if index_type == "auto":
            index_type = settings.faiss_large_index if count > settings.faiss_approx_above else "Flat"
        if index_type != "Flat" and count < min_train_size(index_type, identity.dim):
            log.info("FAISS %s: %d vectors are too few to train %s: exact Flat until there are %d", identity.name,
                     count, index_type, min_train_size(index_type, identity.dim))
            index_type = "Flat"
        return cls.load_or_build(store, identity, settings.faiss_dir, index_type, settings.faiss_ef_search,
                                 settings.faiss_nprobe, background=background)

    def _selector(self, kind: str | None, labels: tuple[str, ...] | None) -> _faiss.IDSelector | None:
        """The id filter for (kind, labels), cached: the most recent `SELECTOR_CACHE` filters are kept
        (any label a client names would otherwise stay in memory for good)."""
        if kind is None and not labels:
            return None
        key = (kind, labels)
        with self._selectors_lock:
            sel = self._selectors.get(key)
            if sel is not None:
                self._selectors.move_to_end(key)
                return sel
        mask = np.ones(len(self.meta["ids"]), bool)
        if kind is not None:
            mask &= self.meta["kind"] == kind
        if labels:
            mask &= np.isin(self.meta["label"], list(labels))
        ids = np.ascontiguousarray(self.meta["ids"][mask])
        sel = faiss.IDSelectorBatch(ids)
        sel.ids_ref = ids  # keep the array alive as long as the selector
        with self._selectors_lock:
            self._selectors[key] = sel
            while len(self._selectors) > SELECTOR_CACHE:
                self._selectors.popitem(last=False)
        return sel

    def search(self, queries: np.ndarray, k: int, *, kind: str | None = None,
               labels: tuple[str, ...] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """k nearest items by cosine similarity.

        Args:
            queries: (n, dim) float32, L2-normalised.
            k: neighbours per query. kind: only 'image' or 'object' items. labels: only these labels.

        Returns:
            (similarities (n, k) float32, item ids (n, k) int64); missing slots have id -1.
        """
        if self.ntotal == 0 or k <= 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        with self.lock.read():
            if self.ntotal == 0:
                return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
            sel = self._selector(kind, labels)
            if self.hnsw:
                params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
                if sel is not None:
                    params.sel = sel
            elif self.ivf:
                params = faiss.SearchParametersIVF(nprobe=self.nprobe)
                if sel is not None:
                    params.sel = sel
            else:
                params = faiss.SearchParameters(sel=sel) if sel is not None else None
            # a few queries: one thread. FAISS parallelises over queries anyway, and the OpenMP team's threads
            # spinning after each search took the CPU from the query's other work (1M items: 15.5 → 11.4 ms p50
            # per text query in the service, 2 cores). OpenMP's thread count is per calling thread: builds elsewhere
            # keep theirs.
            few = len(queries) <= SINGLE_THREAD_QUERIES
            threads = faiss.omp_get_max_threads()
            if few:
                faiss.omp_set_num_threads(1)
            try:
                D, ids = self.index.search(np.ascontiguousarray(queries, np.float32), min(k, self.ntotal),
                                           params=params)
            finally:
                if few:
                    faiss.omp_set_num_threads(threads)
        return D, ids

    # --- live updates --------------------------------------------------------------------------
    def _append(self, ids: np.ndarray, vecs: np.ndarray, meta: dict[str, np.ndarray]) -> int:
        """Add vectors (ids int64 (n,), float32 (n, dim)) and their filter metadata (same order)."""
        if not len(ids):
            return 0
        self.index.add_with_ids(np.ascontiguousarray(vecs, np.float32), ids)
        self.meta = {k: np.concatenate([self.meta[k], meta[k]]) for k in self.meta}
        self.max_id = max(self.max_id, int(ids.max()))
        return len(ids)

    def _add(self, store: Store, after_id: int) -> int:
        """Add every vector with item id > after_id (in id order, as `item_meta` returns them)."""
        batches = list(store.vectors.stream(self.identity.name, after_id=after_id))
        if not batches:
            return 0
        ids = np.concatenate([i for i, _ in batches])
        return self._append(ids, np.vstack([v for _, v in batches]),
                            store.vectors.item_meta(self.identity.name, after_id=after_id))

    def _remove(self, ids: np.ndarray) -> int:
        if not len(ids):
            return 0
        mask = np.isin(self.meta["ids"], ids)
        if not mask.any():
            return 0
        gone = np.ascontiguousarray(self.meta["ids"][mask])
        try:
            self.index.remove_ids(faiss.IDSelectorBatch(gone))
        except RuntimeError:  # HNSW cannot remove: rebuild its graph from the vectors that stay
            keep = ~mask
            vecs = np.vstack([self.index.index.reconstruct(int(i)) for i in np.flatnonzero(keep)]) if keep.any() \
                else np.zeros((0, self.identity.dim), np.float32)
            fresh = faiss.IndexIDMap2(faiss.index_factory(self.identity.dim, self.index_type,
                                                          faiss.METRIC_INNER_PRODUCT))
            if len(vecs):
                fresh.add_with_ids(vecs, self.meta["ids"][keep])
            self.index = fresh
        self.meta = {k: v[~mask] for k, v in self.meta.items()}
        return int(mask.sum())

    def sync(self, store: Store, removed: Iterable[int] = ()) -> dict[str, int]:
        """Bring the in-memory index up to date with Postgres: drop `removed` item ids, add every vector
        above the index's max id, and when the counts still differ (a notification was missed, or
        transactions committed out of id order) reconcile the id sets exactly.

        Returns:
            {"added": n, "removed": n} vectors.
        """
        removed_ids = np.fromiter((int(i) for i in removed), np.int64)
        with self.lock.write():
            n_removed = self._remove(removed_ids)
            n_added = self._add(store, self.max_id)
            count, _ = store.vectors.watermark(self.identity.name)
            if count != self.ntotal:
                pg_ids = store.vectors.ids(self.identity.name)
                n_removed += self._remove(np.setdiff1d(self.meta["ids"], pg_ids))
                missing = np.setdiff1d(pg_ids, self.meta["ids"])
                if len(missing):
                    n_added += self._add_ids(store, missing)
            if n_removed or n_added:
                self._selectors.clear()
                self.dirty = True
        return {"added": n_added, "removed": n_removed}

    def _add_ids(self, store: Store, ids: np.ndarray) -> int:
        vecs, meta = store.vectors.by_id(self.identity.name, ids)
        return self._append(meta["ids"], vecs, meta) if len(meta["ids"]) else 0

    def item_images(self, item_ids: list[int]) -> dict[int, tuple[int, float | None]]:
        """item id → (its image id, its detection score or None) for those of `item_ids` in this index: what a
        search ranks its candidates by, from memory (the SQL lookup it replaces cost ~3 ms per query at 1M items).
        """
        if not item_ids:
            return {}
        with self.lock.read():
            meta = self.meta
            ids, order = meta["ids"], self._id_order(meta)
            if not len(ids):  # emptied since the search that found the candidates
                return {}
            keys = ids if order is None else ids[order]
            q = np.asarray(item_ids, np.int64)
            pos = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
            found = keys[pos] == q
            at = pos if order is None else order[pos]
            image, score = meta["image_id"][at], meta["score"][at]
        # Python scalars first (.tolist()): per-element numpy scalars cost ~0.4 ms per 200 candidates
        return {i: (im, None if sc != sc else sc)  # NaN: a whole image has no detection score
                for i, im, sc, f in zip(q.tolist(), image.tolist(), score.tolist(), found.tolist()) if f}

    def _id_order(self, meta: dict[str, np.ndarray]) -> np.ndarray | None:
        """None when `meta["ids"]` is sorted (as loaded, and as appends in id order keep it), else the argsort;
        cached per metadata dict (every change makes a new one)."""
        cached = self._order_cache
        if cached is not None and cached[0] is meta:
            return cached[1]
        ids = meta["ids"]
        order = None if bool(np.all(ids[1:] > ids[:-1])) else np.argsort(ids, kind="stable")
        self._order_cache = (meta, order)
        return order

    def save(self, store: Store, faiss_dir: Path) -> None:
        """Write the in-memory index and its watermark (as `build` does), atomically. Not while a background
        build runs (the exact stopgap would overwrite the file it is about to save)."""
        if self.upgrade is not None and self.upgrade.is_alive():
            return
        with self.lock.read():
            count, max_id = store.vectors.watermark(self.identity.name)
            if count != self.ntotal or max_id != self.max_id:
                return  # Postgres moved on since; the next start extends or rebuilds from it
            idx_path, meta_path = self.paths(faiss_dir, self.identity.name)
            atomic_write(idx_path, lambda p: faiss.write_index(self.index, p))
            atomic_write(meta_path, lambda p: Path(p).write_text(json.dumps(
                {"identity": asdict(self.identity), "index_type": self.index_type, "count": count, "max_id": max_id,
                 "ntotal": self.ntotal, "dim": int(self.index.d),
                 "ids_sha256": ids_fingerprint(index_ids(self.index)), "built_at": time.time()}, indent=2)))
            self.dirty = False
