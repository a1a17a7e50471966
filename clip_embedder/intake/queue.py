"""The durable indexing queue: procrastinate jobs in the project's own PostgreSQL (no Redis).

Enrichments that need not hold a photo back from search (OCR) run as follow-up jobs on the `enrich` queue
(ENRICH=queue), deferred by the worker once the photo is written.

One job per distinct image content: the job's `lock` and `queueing_lock` are the image's sha256, so
the same bytes are never queued twice and never indexed by two workers at once. Jobs are retried
with exponential backoff (WORKER_MAX_ATTEMPTS, WORKER_RETRY_WAIT); a job whose worker stopped sending
heartbeats (killed, machine lost) is run again by another worker (WORKER_STALLED_AFTER). Indexing is
idempotent by sha256, so a job that runs twice writes once.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import procrastinate
from procrastinate.exceptions import AlreadyEnqueued

log = logging.getLogger(__name__)

QUEUE = "index"
TASK_NAME = "clip_embedder.index_image"
#: follow-up enrichments (OCR) of images already searchable: their own queue, so workers give them their own
#: concurrency (ENRICH_CONCURRENCY) and indexing never waits behind them
ENRICH_QUEUE = "enrich"
ENRICH_TASK = "clip_embedder.enrich_image"
ENRICH_LOCK_PREFIX = "enrich:"
#: the analysis of an indexed image (ANALYZE=true): on the enrich queue, lock `analyse:<sha256>`
ANALYSE_TASK = "clip_embedder.analyse_image"
ANALYSE_LOCK_PREFIX = "analyse:"
#: reading a receipt photo into the ledger: on the enrich queue too, lock `receipt:<sha256>`
RECEIPT_TASK = "clip_embedder.read_receipt"
RECEIPT_LOCK_PREFIX = "receipt:"
_LOCK_PREFIX = {ENRICH_TASK: ENRICH_LOCK_PREFIX, ANALYSE_TASK: ANALYSE_LOCK_PREFIX, RECEIPT_TASK: RECEIPT_LOCK_PREFIX}


@dataclass(frozen=True)
class IndexJob:
    """The arguments of one indexing job (JSON in `procrastinate_jobs.args`).

    `path` is a key under STORAGE_ROOT (`storage='originals'`) or a file path on the workers' machines
    (`storage='file'`, a scanned folder); `file_name` is what people see.
    """

    sha256: str
    path: str
    storage: str
    file_name: str


def sync_app(url: str) -> procrastinate.App:
    """A procrastinate app for deferring from synchronous code (the API). Open it with `app.open()`."""
    return procrastinate.App(connector=procrastinate.SyncPsycopgConnector(conninfo=url, min_size=1, max_size=2))


POOL_TIMEOUT_S = 10.0  # a worker's wait for a pooled connection before it takes the database for gone


def async_app(url: str) -> procrastinate.App:
    """A procrastinate app for the worker's event loop. Its pool (procrastinate checks each connection before
    handing it out) gives up after POOL_TIMEOUT_S, so a lost database is noticed in seconds (psycopg_pool's default
    waits 30 s per attempt)."""
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, timeout=POOL_TIMEOUT_S))


def _enrich_task(app: procrastinate.App, job: IndexJob, task: str = ENRICH_TASK):
    """A task of the enrich queue (`ENRICH_TASK`, `ANALYSE_TASK`, `RECEIPT_TASK`) configured for one photo: lock and
    queueing lock `enrich:<sha256>` / `analyse:<sha256>` / `receipt:<sha256>` (one at a time, never queued twice)."""
    lock = _LOCK_PREFIX[task] + job.sha256
    return app.configure_task(task, queue=ENRICH_QUEUE, lock=lock, queueing_lock=lock)


async def defer_enrich_job(app: procrastinate.App, job: IndexJob, task: str = ENRICH_TASK) -> int | None:
    """Queue the enrichment (or, with `task=ANALYSE_TASK`, the analysis) of an indexed image (`_enrich_task`).
    Returns its id, or None when one is already queued."""
    try:
        return await _enrich_task(app, job, task).defer_async(**asdict(job))
    except AlreadyEnqueued:
        return None


def defer_enrich_job_sync(app: procrastinate.App, job: IndexJob, task: str = ENRICH_TASK) -> int | None:
    """`defer_enrich_job` from synchronous code (the CLI, the API's receipt uploads); `app` from `sync_app`,
    opened."""
    try:
        return _enrich_task(app, job, task).defer(**asdict(job))
    except AlreadyEnqueued:
        return None


def defer_index_job(app: procrastinate.App, job: IndexJob) -> int | None:
    """Queue an indexing job; returns its id, or None when a job for the same bytes is already queued
    (then look it up with `TaskRepository.active_job_for`)."""
    try:
        return app.configure_task(TASK_NAME, queue=QUEUE, lock=job.sha256, queueing_lock=job.sha256).defer(
            **asdict(job))
    except AlreadyEnqueued:
        return None
