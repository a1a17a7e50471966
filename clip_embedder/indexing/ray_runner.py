"""Distributed indexing on Ray Data: `embed_and_index --runner ray [--ray-address …]`.

The driver lists the files; Ray Data splits them into batches and hands each batch to an actor of a pool
(`IndexActor`: the detector, the embedders, the tagger and the OCR engine loaded once per actor, on a GPU
when the cluster has them). Each actor runs the same stage functions as the sequential runner
(`Indexer.index_batch`: read → … → embed → write) and writes its batch in one transaction to the same
PostgreSQL; only a small `BatchOutcome` comes back to the driver, which prints the run's totals. Images are
unique by sha256 in the database, so two actors meeting the same file write it once; the copies' hashes come
back too, and the driver then records each photo under its first path in file order, as the sequential runner
does (whichever actor committed first, the same rows).

Every machine of the cluster needs: this project installed (the same version), the database reachable at
DATABASE_URL (the embedded server is reachable only on the driver's machine), the image files at the same
paths (a shared mount), and the models at the same paths (or the MLflow server in MLFLOW_TRACKING_URI).
Modelled on clip-retrieval's distributed inference (a reader, a pool of mapper workers, a writer per
worker), with Ray Data's actor pools in place of its pyspark executors.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from clip_embedder.config import Settings
from clip_embedder.db.records import ImageMove
from clip_embedder.db.store import Store
from clip_embedder.indexing.batch import BatchOutcome, IndexStats, SourceFile

log = logging.getLogger(__name__)


def portable_settings(settings: Settings, database_url: str) -> Settings:
    """The settings the actors get: relative paths made absolute (an actor may run in another working
    directory) and the database given by URL (an actor never starts an embedded server of its own)."""
    update: dict[str, Any] = {"database_url": database_url}
    for name, value in settings:
        if isinstance(value, Path) and not value.is_absolute():
            update[name] = value.resolve()
    if not Path(settings.detector_weights).is_absolute() and Path(settings.detector_weights).exists():
        update["detector_weights"] = str(Path(settings.detector_weights).resolve())
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        update["mlflow_tracking_uri"] = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return settings.model_copy(update=update)


class IndexActor:
    """One member of the actor pool: loads the models once, then indexes and writes batch after batch.

    Ray Data calls it with a batch of rows (columns `path`, `file_name`, `split`, `storage`; numpy arrays of
    str) and gets back one row per batch: `outcome`, the JSON of a `BatchOutcome`.
    """

    def __init__(self, settings: Settings, redetect: bool = False):
        from clip_embedder.db.store import Store  # noqa: PLC0415
        from clip_embedder.indexing.pipeline import Indexer  # noqa: PLC0415
        from clip_embedder.models.detector import load_detector  # noqa: PLC0415
        from clip_embedder.models.embedders import create_embedder  # noqa: PLC0415
        from clip_embedder.models.runtimes import freeze_heap  # noqa: PLC0415

        t = time.perf_counter()
        self.store = Store.open(settings, max_size=2)
        detector = load_detector(settings)
        embedders = {s: create_embedder(s, settings).load() for s in settings.spaces}
        self.indexer = Indexer.from_settings(settings, self.store, detector, embedders, redetect=redetect)
        freeze_heap()  # the models' objects stay out of every full collection, as in workers
        self.load_seconds = time.perf_counter() - t

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sources = [SourceFile(str(p), str(n), str(sp) or None, str(st))
                   for p, n, sp, st in zip(batch["path"], batch["file_name"], batch["split"], batch["storage"])]
        outcome = BatchOutcome.of(self.indexer.index_batch(sources))
        outcome.timings["actor_load"] = self.load_seconds
        self.load_seconds = 0.0  # counted once per actor
        return {"outcome": np.array([json.dumps(asdict(outcome))])}


def pool_size(resources: dict[str, float], actors: int | None, cpus_per_actor: float) -> tuple[int, float]:
    """(actors, GPUs per actor) for a cluster's resources (`ray.cluster_resources()`): one actor per GPU
    when there are GPUs, else one per `cpus_per_actor` CPUs; `actors` overrides the count."""
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return actors or gpus, 1.0 if (actors or gpus) <= gpus else gpus / (actors or gpus)
    return actors or max(1, int(resources.get("CPU", 1) // cpus_per_actor)), 0.0


def run_on_ray(settings: Settings, sources: list[SourceFile], *, database_url: str, redetect: bool = False,
               address: str | None = None, actors: int | None = None, cpus_per_actor: float = 1.0,
               batch_size: int | None = None, progress: bool = True) -> IndexStats:
    """Index `sources` on a Ray cluster; returns the run's totals: stage seconds summed over the actors, plus
    `ray_start` (connecting to / starting the cluster) and `actor_load` (model loading, summed over the actors).

    Args:
        settings: the project settings (shipped to every actor; relative paths made absolute).
        database_url: the PostgreSQL every actor writes to (the driver's resolved URL).
        address: a running cluster (`host:port` or `auto`); None starts a local one for this run and stops it.
        actors: pool size (default: one per GPU, else one per `cpus_per_actor` CPUs of the cluster).
        batch_size: files per batch (default BATCH_SIZE).

    Raises:
        RuntimeError: an actor failed (its error, with Ray's traceback, is chained).
        ConnectionError: no cluster at `address`.
    """
    import ray  # noqa: PLC0415  (optional dependency: pip install -e ".[ray]")
    import ray.data  # noqa: PLC0415

    t0 = time.perf_counter()
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
        # the process's own logging is left as it is; the actors' logs stay in Ray's session folder
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    stats = IndexStats()
    stats.timings["ray_start"] = time.perf_counter() - t0
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        n_actors, gpus = pool_size(ray.cluster_resources(), actors, cpus_per_actor)
        shipped = portable_settings(settings, database_url)
        if gpus and shipped.device == "cpu":
            shipped = shipped.model_copy(update={"device": "cuda:0"})  # Ray sets CUDA_VISIBLE_DEVICES per actor
        size = batch_size or settings.batch_size
        rows = [{"path": s.path, "file_name": s.file_name, "split": s.split or "", "storage": s.storage}
                for s in sources]
        log.info("Ray: %d files in batches of %d over %d actors (%s GPU each)", len(rows), size, n_actors, gpus)
        # one block per batch, in file order: each actor gets exactly the batches the sequential runner makes, so
        # batch-dependent computation (the detector's shared letterbox shape, say) gives the same rows
        ds = ray.data.from_items(rows, override_num_blocks=max(1, -(-len(rows) // size)))
        out = ds.map_batches(IndexActor, fn_constructor_kwargs={"settings": shipped, "redetect": redetect},
                             batch_size=size, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=n_actors),
                             num_cpus=0 if gpus else cpus_per_actor, num_gpus=gpus)
        copies = Copies(sources)
        with tqdm(total=len(rows), unit="img", desc=f"indexing on Ray ({n_actors} actors)",
                  disable=not progress) as bar:
            _gather(out.iter_rows(), stats, copies, bar)
    finally:
        if started:
            ray.shutdown()
    _record_first_copies(copies, portable_settings(settings, database_url))
    stats.seconds = time.perf_counter() - t0
    return stats


def _gather(rows: Iterable[dict[str, Any]], stats: IndexStats, copies: Copies, bar: tqdm) -> None:
    """Sum the actors' batch outcomes into `stats` as they arrive, noting every path read in `copies`.

    Raises:
        RuntimeError: an actor failed (the batches written before it are kept; a re-run skips them).
    """
    import ray  # noqa: PLC0415

    try:
        for outcome in _outcomes(rows):
            stats.add(outcome)
            copies.add(outcome.hashes)
            bar.update(outcome.seen)
            bar.set_postfix(objects=stats.objects, failed=stats.failed)
    except ray.exceptions.RayError as e:
        cause = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"a Ray actor failed: {cause} (batches written before it are kept; run again to "
                           "index the rest)") from e


def _record_first_copies(copies: Copies, settings: Settings) -> None:
    """Record each photo found at several paths under the first of them in file order (as the sequential runner
    does), whatever order the actors committed in."""
    moves = copies.moves()
    if not moves:
        return
    store = Store.open(settings, max_size=1)
    try:
        log.info("%d photos found at several paths: recorded under the first", store.images.repoint(moves))
    finally:
        store.close()


class Copies:
    """The paths each sha256 was read from during one run, to settle which path a photo with several copies is
    recorded under: the first in file order (the sequential runner's choice), whichever batch committed first.
    Photos stored before the run are left under the path they have (the sequential runner skips them)."""

    def __init__(self, sources: list[SourceFile]):
        self.order = {s.path: i for i, s in enumerate(sources)}
        self.sources = sources
        self.first: dict[str, str] = {}               # sha256 → its first path read so far (in file order)
        self.paths: dict[str, list[str]] = {}         # sha256 → every path, only for those with several
        self.new: set[str] = set()                    # sha256 not stored when some batch planned it

    def add(self, hashes: Iterable[tuple[str, str, bool] | list[Any]]) -> None:
        """Note the (path, sha256, new) triples of the files one batch read."""
        for path, sha, new in hashes:
            if new:
                self.new.add(sha)
            seen = self.first.get(sha)
            if seen is None:
                self.first[sha] = path
                continue
            self.paths.setdefault(sha, [seen]).append(path)
            if self.order[path] < self.order[seen]:
                self.first[sha] = path

    def moves(self) -> list[ImageMove]:
        """`ImageRepository.repoint` moves: each photo first stored in this run and read at several paths, to its
        first path."""
        out = []
        for sha, paths in self.paths.items():
            if sha in self.new:
                src = self.sources[self.order[self.first[sha]]]
                out.append(ImageMove(sha, src.path, src.file_name, src.storage, paths))
        return out


def _outcomes(rows: Iterable[dict[str, Any]]) -> Iterator[BatchOutcome]:
    for row in rows:
        outcome = BatchOutcome(**json.loads(str(row["outcome"])))
        outcome.hashes = [(str(p), str(s), bool(n)) for p, s, n in outcome.hashes]  # JSON gave lists
        yield outcome
