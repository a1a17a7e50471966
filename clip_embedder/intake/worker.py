"""Queue worker: `python -m clip_embedder.worker [--concurrency N]`.

Loads the detector and the embedders of the active spaces once, then runs indexing jobs from the
queue in the project's PostgreSQL through the same stage functions as the CLI
(`clip_embedder.indexing.pipeline`). With ENRICH=queue (the default) an indexing job writes the photo searchable
without reading its text, and queues a follow-up enrichment job (OCR, `enrich` queue, ENRICH_CONCURRENCY at once)
that re-describes it and re-embeds what changed; with ANALYZE=true an analysis job (description, sensitive verdict,
labels: `clip_embedder.analysis`) follows on the same queue, where receipt photos are read into the ledger too
(`POST /api/receipts`). Start as many as you like, on one machine or several
sharing DATABASE_URL (and STORAGE_ROOT: a shared folder or gs://). Ctrl-C / SIGTERM finish the jobs in
hand, then stop; a worker killed outright has its jobs run again by another worker once its
heartbeat is WORKER_STALLED_AFTER seconds old. A database that goes away (restarted, failed over, killed) does
not take the worker with it: it waits with backoff and resumes (`clip_embedder.intake.reconnect`).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import procrastinate

from clip_embedder import offline  # noqa: F401
from clip_embedder.intake.queue import (
    ANALYSE_TASK,
    ENRICH_TASK,
    RECEIPT_TASK,
    IndexJob,
    defer_enrich_job,
    defer_enrich_job_sync,
    sync_app,
)

log = logging.getLogger("clip_embedder.worker")


class IndexWorker:
    """The models, the store and the task function of one worker process."""

    def __init__(self, settings):
        from prometheus_client import Counter, Histogram  # noqa: PLC0415

        from clip_embedder.db.store import Store  # noqa: PLC0415
        from clip_embedder.indexing.pipeline import Indexer, MicroBatcher  # noqa: PLC0415
        from clip_embedder.intake.originals import open_originals  # noqa: PLC0415
        from clip_embedder.models.detector import load_detector  # noqa: PLC0415
        from clip_embedder.models.embedders import create_embedder  # noqa: PLC0415
        from clip_embedder.models.runtimes import freeze_heap  # noqa: PLC0415

        self.settings = settings
        t0 = time.perf_counter()
        self.store = Store.open(settings, max_size=settings.worker_concurrency + 2)
        #: the repositories a job touches: its tasks' outcome and the image it wrote
        self.tasks, self.images = self.store.tasks, self.store.images
        detector = load_detector(settings)
        embedders = {s: create_embedder(s, settings) for s in settings.spaces}
        for emb in embedders.values():
            self.store.spaces.ensure(emb.identity)  # SpaceMismatchError: refuse to mix models
            emb.load()
        self.originals = open_originals(settings.storage_root)
        #: the enrichment jobs' indexer (OCR as configured); the indexing jobs' one defers OCR with ENRICH=queue
        self.enricher = Indexer.from_settings(settings, self.store, detector, embedders)
        self.indexer = self.enricher.deferring_enrichments() if settings.enrich == "queue" else self.enricher
        self.batcher = MicroBatcher(self.indexer, max_batch=settings.worker_concurrency, on_batch=self._observe)
        self.enrich_batcher = MicroBatcher(self.enricher.enriching_only(), max_batch=settings.enrich_concurrency,
                                           on_batch=self._observe)
        #: ANALYZE=true: the analyser (built on first use, sharing the detector and the MobileNet extractor)
        self._analyser = None
        #: the receipt reader (OCR + the RECEIPT_EXTRACTOR extractor), built by the first receipt job
        self._receipt_reader = None
        self._receipt_lock = threading.Lock()
        self._detector, self._embedders = detector, embedders
        #: set by `main`: the queue app and its event loop (enrichment jobs are deferred from job threads)
        self.app: procrastinate.App | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        freeze_heap()  # the models' objects stay out of every full collection (see runtimes.freeze_heap)
        log.info("worker ready in %.1fs: spaces %s, detector %s", time.perf_counter() - t0, ",".join(embedders),
                 detector.weights_sha256[:12])
        self.jobs = Counter("clip_embedder_worker_jobs", "indexing jobs finished by this worker", ["outcome"])
        self.enrichments = Counter("clip_embedder_worker_enrichments", "enrichment (OCR) jobs finished by this worker",
                                   ["outcome"])
        self.analyses = Counter("clip_embedder_worker_analyses", "analysis jobs finished by this worker",
                                ["outcome"])
        self.images_written = Counter("clip_embedder_worker_images_indexed", "new images written by this worker")
        self.stage_seconds = Histogram("clip_embedder_worker_stage_seconds", "seconds per pipeline stage per batch",
                                       ["stage"])
        self.batch_size = Histogram("clip_embedder_worker_batch_images", "images per micro-batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64))

    def _observe(self, batch) -> None:
        for stage, s in batch.timings.items():
            self.stage_seconds.labels(stage).observe(s)
        self.batch_size.observe(len(batch.sources))
        self.images_written.inc(len(batch.inserted))

    def index_image(self, sha256: str, path: str, storage: str, file_name: str) -> dict:
        """The job: index one image (idempotent by sha256). A file that is not a usable image (or is gone)
        fails the task for good; anything else (database, storage) raises and is retried."""
        from clip_embedder.indexing.batch import SourceFile  # noqa: PLC0415

        try:
            data = self.originals.get(path) if storage == "originals" else None
        except FileNotFoundError as e:
            self.tasks.finish(sha256, error=f"{file_name}: the stored original is missing ({e})")
            self.jobs.labels("failed").inc()
            return {"error": "original missing"}
        except Exception as e:
            self.tasks.note_error(sha256, f"{type(e).__name__}: {e} (will retry)")
            raise
        try:
            out = self.batcher.submit(SourceFile(path, file_name, None, storage, data))
        except Exception as e:
            self.tasks.note_error(sha256, f"{type(e).__name__}: {e} (will retry)")
            self.jobs.labels("retried").inc()
            raise
        if out.error is not None:
            self.tasks.finish(sha256, error=out.error)
            self.jobs.labels("failed").inc()
            return {"error": out.error}
        if out.sha256 != sha256:
            self.tasks.finish(sha256, error=f"{file_name} changed since it was queued; scan it again")
            self.jobs.labels("failed").inc()
            return {"error": "changed"}
        image = self.images.by_sha(sha256)
        if image is not None and self.enricher.needs_enrichment(image.enrichment):
            self._defer_enrichment(IndexJob(sha256, path, storage, file_name))  # raises: retried, indexing skipped
        if image is not None and self.settings.analyze and \
                self.store.analyses.signature(image.id) != self.analyser.signature:
            self._defer_enrichment(IndexJob(sha256, path, storage, file_name), ANALYSE_TASK)
        self.tasks.finish(sha256, error=None)
        self.jobs.labels("succeeded").inc()
        return {"image_id": image.id if image else None, "objects": out.objects, "batch": out.batch_size}

    def _defer_enrichment(self, job: IndexJob, task: str = ENRICH_TASK) -> None:
        """Queue a follow-up job (`task`: the enrichment or the analysis) of an image just written: on the worker's
        event loop when the job runs under `main` (this runs in a job thread), else through a short-lived
        synchronous connection (the job function called on its own)."""
        if self.app is not None and self.loop is not None and self.loop.is_running():
            asyncio.run_coroutine_threadsafe(defer_enrich_job(self.app, job, task), self.loop).result(timeout=30)
            return
        with sync_app(self.store.url).open() as app:
            defer_enrich_job_sync(app, job, task)

    @property
    def analyser(self):
        """The ANALYSIS_PROVIDER analyser (built on first use; the local one shares this worker's detector and
        MobileNet extractor and loads its models then)."""
        if self._analyser is None:
            from clip_embedder.models.registry import ANALYSIS_PROVIDERS  # noqa: PLC0415

            if self.settings.analysis_provider == "local":
                from clip_embedder.analysis.local import LocalAnalyser  # noqa: PLC0415
                from clip_embedder.models.mobilenet import MobileNetEmbedder  # noqa: PLC0415

                extractor = self._embedders.get("mobilenet")
                self._analyser = LocalAnalyser.from_settings(self.settings, detector=self._detector, extractor=(
                    extractor if isinstance(extractor, MobileNetEmbedder) else None))
            else:
                self._analyser = ANALYSIS_PROVIDERS.create(self.settings.analysis_provider, self.settings)
        return self._analyser

    def analyse_image(self, sha256: str, path: str, storage: str, file_name: str) -> dict:
        """The analysis job: describe the indexed image, give its sensitive verdict and labels, store them (the text
        the enrichment job read is reused). An image deleted, or already analysed by this analyser, is left alone;
        a failure (a hosted provider's included) raises and is retried."""
        from clip_embedder.analysis.jobs import analyse_and_store, stored_lines  # noqa: PLC0415

        image = self.images.by_sha(sha256)
        if image is None or self.store.analyses.signature(image.id) == self.analyser.signature:
            self.analyses.labels("skipped").inc()
            return {"skipped": "not indexed" if image is None else "already analysed"}
        try:
            data = self.originals.get(path) if storage == "originals" else Path(path).read_bytes()
            ocr_done = self.enricher.ocr is not None and not self.enricher.needs_enrichment(image.enrichment)
            out = analyse_and_store(self.store, self.analyser, image.id, data, self.settings, name=file_name,
                                    lines=stored_lines(self.store, image.id, ocr_done), embedders=self._embedders)
        except Exception:
            self.analyses.labels("retried").inc()
            raise
        self.analyses.labels("succeeded").inc()
        return {"image_id": image.id, "sensitive": bool(out and out.sensitive and out.sensitive.verdict)}

    @property
    def receipt_reader(self):
        """OCR (RECEIPT_LANGS) and the RECEIPT_EXTRACTOR extractor (the registered champion, else the rules), built
        once."""
        with self._receipt_lock:
            if self._receipt_reader is None:
                from clip_embedder.receipts.ledger import Reader  # noqa: PLC0415

                self._receipt_reader = Reader.from_settings(self.settings)
        return self._receipt_reader

    def read_receipt(self, sha256: str, path: str, storage: str, file_name: str) -> dict:
        """The receipt job: read an uploaded receipt photo (OCR, then the extractor) and write it to the ledger (filed
        under a category, checked, flagged when it may duplicate another). A photo already in the ledger is left
        alone; one that is missing or not an image fails its task for good; anything else raises and is retried."""
        from clip_embedder.images import ImageError, decode_image  # noqa: PLC0415
        from clip_embedder.receipts.ledger import file_receipt  # noqa: PLC0415

        known = self.store.receipts.ids_by_sha([sha256])
        if known:
            return {"receipt_id": known[sha256], "skipped": "already in the ledger"}
        try:
            image = decode_image(self.originals.get(path), max_bytes=self.settings.index_max_bytes,
                                 max_pixels=self.settings.index_max_pixels, name=file_name,
                                 settings=("INDEX_MAX_BYTES", "INDEX_MAX_PIXELS"))
        except (FileNotFoundError, ImageError) as e:
            self.tasks.finish(sha256, error=f"{file_name}: {e}", kind="receipt")
            return {"error": str(e)}
        try:
            reader = self.receipt_reader
            receipt = reader.read(image)
            receipt_id, _ = file_receipt(self.store, receipt, sha256=sha256, original=path, file_name=file_name,
                                         size=image.size, extractor_version=reader.version)
        except Exception as e:
            self.tasks.note_error(sha256, f"{type(e).__name__}: {e} (will retry)", kind="receipt")
            raise
        self.tasks.finish(sha256, error=None, kind="receipt")
        return {"receipt_id": receipt_id, "needs_review": receipt.needs_review}

    def enrich_image(self, sha256: str, path: str, storage: str, file_name: str) -> dict:
        """The follow-up job: read the text in an indexed image (OCR), re-describe it and re-embed what changed
        (`Indexer.index_batch` re-enriches a stored image). An image deleted or already enriched meanwhile is left
        alone; a failure raises and is retried (WORKER_MAX_ATTEMPTS), then the job fails."""
        from clip_embedder.indexing.batch import SourceFile  # noqa: PLC0415

        image = self.images.by_sha(sha256)
        if image is None or not self.enricher.needs_enrichment(image.enrichment):
            self.enrichments.labels("skipped").inc()
            return {"skipped": "not indexed" if image is None else "already enriched"}
        try:
            data = self.originals.get(path) if storage == "originals" else None
            out = self.enrich_batcher.submit(SourceFile(path, file_name, None, storage, data))
            if out.error is not None:
                raise RuntimeError(out.error)
        except Exception:
            self.enrichments.labels("retried").inc()
            raise
        self.enrichments.labels("succeeded").inc()
        return {"image_id": image.id, "batch": out.batch_size}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m clip_embedder.worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, default=None,
                   help="jobs this process holds at once (default: WORKER_CONCURRENCY); their images are detected "
                        "and embedded together in one batch")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on this port (default: WORKER_METRICS_PORT; 0 = off)")
    p.add_argument("--burst", action="store_true",
                   help="stop when the queues are empty: indexing first, then the enrichments it queued (batch use, "
                        "benchmarks)")
    return p


def start_metrics(settings, port: int | None) -> int:
    """Serve this worker's Prometheus metrics (WORKER_METRICS_PORT, or `port` from --metrics-port; 0 = off) on the
    first free port of its range, announced in WORKER_METRICS_SD_DIR; the port written to WORKER_READY_FILE.
    Returns the port (0: off).

    Raises:
        OSError: every port of the range is taken."""
    port = settings.worker_metrics_port if port is None else port
    if not port:
        return 0
    from clip_embedder.intake.metrics_server import serve_metrics  # noqa: PLC0415

    port = serve_metrics(port, settings.worker_metrics_ports, sd_dir=settings.worker_metrics_sd_dir,
                         address=settings.worker_metrics_address)
    if settings.worker_ready_file:  # the container's health check: models loaded, metrics served on this port
        Path(settings.worker_ready_file).write_text(str(port))
    return port


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # until procrastinate installs its graceful handlers, SIGTERM exits like Ctrl-C (exit hooks run, so the
    # embedded PostgreSQL is released)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("clip_embedder").setLevel(logging.INFO)
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)  # one line per failed connection: the supervisor says it
    from procrastinate import RetryStrategy  # noqa: PLC0415
    from procrastinate.worker import Worker  # noqa: PLC0415

    from clip_embedder.config import Settings  # noqa: PLC0415
    from clip_embedder.intake.queue import ENRICH_QUEUE, QUEUE, TASK_NAME, async_app  # noqa: PLC0415
    from clip_embedder.intake.reconnect import Supervisor, retry_stalled_jobs  # noqa: PLC0415
    from clip_embedder.models.embedders import SpaceMismatchError  # noqa: PLC0415

    overrides = {}
    if args.concurrency:
        overrides["worker_concurrency"] = args.concurrency
    settings = Settings(**overrides)
    try:
        worker = IndexWorker(settings)
    except (FileNotFoundError, SpaceMismatchError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        start_metrics(settings, args.metrics_port)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    app = worker.app = async_app(worker.store.url)
    retry = RetryStrategy(max_attempts=settings.worker_max_attempts, exponential_wait=settings.worker_retry_wait)
    app.task(name=TASK_NAME, queue=QUEUE, retry=retry)(worker.index_image)
    app.task(name=ENRICH_TASK, queue=ENRICH_QUEUE, retry=retry)(worker.enrich_image)
    app.task(name=ANALYSE_TASK, queue=ENRICH_QUEUE, retry=retry)(worker.analyse_image)
    app.task(name=RECEIPT_TASK, queue=ENRICH_QUEUE, retry=retry)(worker.read_receipt)

    def make_workers() -> list[Worker]:
        common = dict(app=app, wait=not args.burst, update_heartbeat_interval=settings.worker_heartbeat,
                      stalled_worker_timeout=settings.worker_stalled_after, install_signal_handlers=False)
        return [Worker(queues=[QUEUE], concurrency=settings.worker_concurrency,
                       name=f"index-worker-{os.getpid()}", **common),  # type: ignore[arg-type]
                Worker(queues=[ENRICH_QUEUE], concurrency=settings.enrich_concurrency,
                       name=f"enrich-worker-{os.getpid()}", **common)]  # type: ignore[arg-type]

    def stalled_check():
        return retry_stalled_jobs(app, every=max(1.0, settings.worker_stalled_after / 3),
                                  stalled_after=settings.worker_stalled_after,
                                  max_attempts=settings.worker_max_attempts)

    async def run() -> None:
        worker.loop = asyncio.get_running_loop()
        await Supervisor(app, worker.store.url, make_workers, burst=args.burst, side_task=stalled_check).run()

    try:
        asyncio.run(run())
    finally:
        worker.store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
