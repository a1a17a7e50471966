"""What the FAISS indexes stand on: id fingerprints, crash-safe writes, training of approximate indexes, a
readers-writer lock, and the GPU check (`clip_embedder.indexing.faiss_index.SpaceIndex` uses them)."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faiss as _faiss
import numpy as np

log = logging.getLogger(__name__)
faiss: Any = _faiss  # its SWIG stubs miss most of the API (SearchParametersHNSW, IDSelector fields)


def ids_fingerprint(ids: np.ndarray) -> str:
    """sha256 (hex) of a set of item ids (int64, order-free): what a FAISS file holds, checked at load."""
    return hashlib.sha256(np.sort(np.asarray(ids, np.int64)).astype("<i8").tobytes()).hexdigest()


def index_ids(index: Any) -> np.ndarray:
    """The item ids an `IndexIDMap2` holds, int64 (n,)."""
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def remove_orphan_tmp(faiss_dir: Path, space: str, older_than: float = 60.0) -> int:
    """Delete temp files left by a write that was killed (older than `older_than` seconds, so a write in
    progress in another process is left alone). Returns how many were removed."""
    n = 0
    for p in Path(faiss_dir).glob(f"{space}.*.tmp"):
        try:
            if time.time() - p.stat().st_mtime > older_than:
                p.unlink()
                n += 1
        except OSError:
            pass
    return n


def atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


#: vectors an untrained index (IVF, PQ) is trained on at most, drawn at random (FAISS's guideline: 30 to 256
#: training points per IVF list; PQ's 256 centroids per sub-quantiser want ~10,000+)
TRAIN_SAMPLE = 100_000


def ivf_of(index: Any) -> Any | None:
    """The `IndexIVF` inside `index` (a factory-built IVF, possibly under a pre-transform), or None."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def min_train_size(index_type: str, dim: int) -> int:
    """Vectors a FAISS factory string needs before it can be trained: 39 per IVF list (FAISS warns below
    that), 256 for a product quantiser's codebooks, 0 for an index without training (Flat, HNSW)."""
    return _train_size(faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT))


def _train_size(index: Any) -> int:
    """`min_train_size` of a built (untrained or trained) FAISS index."""
    if index.is_trained:
        return 0
    ivf = ivf_of(index)
    return max(39 * ivf.nlist if ivf is not None else 0, 256)


def train_untrained(index: Any, vectors: np.ndarray, seed: int = 0) -> None:
    """Train `index` (an `IndexIDMap2` over an IVF / PQ index) on at most `TRAIN_SAMPLE` of `vectors`
    (float32 (n, dim), drawn with `seed`).

    Raises:
        ValueError: fewer vectors than the index needs (`min_train_size`).
    """
    need = _train_size(faiss.downcast_index(index.index))
    if len(vectors) < need:
        raise ValueError(f"{len(vectors)} vectors are too few to train this FAISS index (it needs {need}); "
                         "use FAISS_INDEX=Flat or auto until the space is larger")
    rng = np.random.default_rng(seed)
    sample = vectors if len(vectors) <= TRAIN_SAMPLE else vectors[rng.choice(len(vectors), TRAIN_SAMPLE, replace=False)]
    index.train(np.ascontiguousarray(sample, np.float32))


#: searches of at most this many queries run on the calling thread alone (no OpenMP team)
SINGLE_THREAD_QUERIES = 4


class RWLock:
    """Many readers or one writer (writers wait for readers to leave; new readers wait for a waiting
    writer). Searches read a FAISS index concurrently; live updates write it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


_gpu_warned = False


def warn_if_no_faiss_gpu() -> bool:
    """True when faiss has GPU support and sees a GPU; otherwise log one warning line and return False.

    The index files are always written in CPU form, so GPU and CPU searchers share them.
    """
    global _gpu_warned
    ok = hasattr(faiss, "StandardGpuResources") and getattr(faiss, "get_num_gpus", lambda: 0)() > 0
    if not ok and not _gpu_warned:
        _gpu_warned = True
        log.warning("--faiss-gpu requested but faiss-gpu or a GPU is not available: using FAISS on the CPU")
    return ok
