"""A worker outlives its database: the queue loop runs under a supervisor that waits out an outage and resumes.

When PostgreSQL stops answering (restarted, upgraded, failed over, killed by the OOM killer), procrastinate's worker
stops with a `ConnectorException`. `Supervisor` catches that, waits for the database with exponential backoff
(`wait_for_database`: the embedded server is started again when it is this process's; an external one is waited
for, with a log line that says what to check), puts the jobs this worker held back on the queue
(`requeue_held_jobs`) and starts the queue loop again — in the same process, with the models still loaded.
Prometheus: `clip_embedder_worker_database_up` (1/0), `clip_embedder_worker_database_outages_total`,
`clip_embedder_worker_database_outage_seconds` (how long each outage kept the worker waiting).
"""
from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any

import procrastinate
import psycopg
import psycopg_pool
from procrastinate.exceptions import ConnectorException
from procrastinate.jobs import Status
from procrastinate.worker import Worker
from prometheus_client import Counter, Gauge, Histogram

from clip_embedder.db.server import restart_embedded_server

log = logging.getLogger("clip_embedder.worker")

#: what a lost database raises out of procrastinate's worker loop (or out of opening its pool)
DATABASE_ERRORS = (ConnectorException, psycopg.Error, psycopg_pool.PoolTimeout, OSError)
BACKOFF_FIRST_S = 0.5  # first wait between two probes of a database that does not answer
BACKOFF_MAX_S = 5.0  # the longest wait between two probes (exponential backoff, doubling, capped here)
PROBE_TIMEOUT_S = 3  # libpq connect_timeout of one probe
WATCH_EVERY_S = 2.0  # seconds between two probes while the queue loop runs

DB_UP = Gauge("clip_embedder_worker_database_up", "1 while this worker's database answers, 0 while it waits for it")
DB_OUTAGES = Counter("clip_embedder_worker_database_outages", "times this worker lost its database and waited for it")
DB_OUTAGE_SECONDS = Histogram("clip_embedder_worker_database_outage_seconds",
                              "seconds from losing the database to working again",
                              buckets=(1, 5, 15, 30, 60, 120, 300, 900, 3600))


def _first_line(e: BaseException) -> str:
    cause = e.__cause__ or e
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


async def probe(url: str) -> str | None:
    """One connection attempt to `url`. Returns None when the database answers, else the reason
    (one line)."""
    try:  # a server that accepts a session is up (one starting or recovering refuses it)
        conn = await psycopg.AsyncConnection.connect(url, connect_timeout=PROBE_TIMEOUT_S)
        await conn.close()
    except (psycopg.Error, OSError) as e:
        return _first_line(e)
    return None


async def wait_for_database(url: str, stopping: asyncio.Event, *, first: float = BACKOFF_FIRST_S,
                            most: float = BACKOFF_MAX_S) -> bool:
    """Wait until the database at `url` answers: probe, then wait `first` seconds, doubling up to `most`.

    Each round first starts the embedded PostgreSQL again when `url` is this process's embedded server and its
    postmaster is gone (`restart_embedded_server`); an external server is only waited for.

    Returns:
        True once the database answers; False when `stopping` is set first (a signal asked the worker to stop).
    """
    delay, attempts, t0 = first, 0, time.monotonic()
    while not stopping.is_set():
        attempts += 1
        await _restart_if_embedded(url)
        reason = await probe(url)
        if reason is None:
            log.warning("the database answers again after %.1f s (%d probes): resuming", time.monotonic() - t0,
                        attempts)
            return True
        if attempts == 1 or delay >= most:  # the first probe and then about every `most` seconds
            log.warning("the database is not answering (%s); waiting for it, next probe in %.1f s. Jobs in hand "
                        "go back to the queue when it answers. If it does not come back, check that PostgreSQL "
                        "runs and DATABASE_URL points at it", reason, delay)
        await _sleep_unless(stopping, delay)
        delay = min(delay * 2, most)
    return False


async def _sleep_unless(stopping: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stopping.wait(), timeout=seconds)
    except TimeoutError:
        pass


async def watch_database(url: str, every: float = WATCH_EVERY_S) -> None:
    """Forever: probe the database every `every` seconds beside the queue loop; `DB_UP` follows the answer. When it
    does not answer and it is this process's embedded server, start it again at once (procrastinate's own pool
    would need tens of seconds of timeouts to give up first)."""
    down = False
    while True:
        reason = await probe(url)
        DB_UP.set(0 if reason else 1)
        if reason and not down:
            log.warning("the database stopped answering (%s): jobs wait until it is back", reason)
        down = reason is not None
        if reason:
            await _restart_if_embedded(url)
        await asyncio.sleep(every)


async def _restart_if_embedded(url: str) -> None:
    """Start the embedded PostgreSQL again when `url` is this process's and its postmaster is gone (logged); a
    failed restart is logged too, and is one more reason to keep waiting."""
    try:
        if await asyncio.to_thread(restart_embedded_server, url):
            log.warning("the embedded PostgreSQL had stopped: this worker started it again")
    except Exception as e:  # noqa: BLE001 - the supervisor keeps waiting for it
        log.warning("could not start the embedded PostgreSQL again: %s", _first_line(e))


async def requeue_held_jobs(app: procrastinate.App, worker_id: int) -> int:
    """Put back on the queue the jobs a previous run of this process held (status `doing` under `worker_id`) when
    its database went away, and forget that worker registration. Returns how many jobs went back."""
    back = 0
    for job in await app.job_manager.list_jobs_async(status=Status.DOING.value, worker_id=worker_id):
        try:
            await app.job_manager.retry_job(job)
            back += 1
        except Exception as e:  # noqa: BLE001 - another worker's stalled-job check got there first
            log.debug("held job %s: %s", job.id, e)
    try:
        await app.job_manager.unregister_worker(worker_id)
    except Exception as e:  # noqa: BLE001 - pruned already by another worker
        log.debug("old worker %s: %s", worker_id, e)
    if back:
        log.warning("%d job(s) this worker held when the database went away are queued again", back)
    return back


async def retry_stalled_jobs(app: procrastinate.App, *, every: float, stalled_after: float,
                             max_attempts: int) -> None:
    """Forever: run again the jobs whose worker stopped sending heartbeats (killed, machine lost);
    a job that already used `max_attempts` fails instead (it may be what kills its workers)."""
    while True:
        try:
            for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after):
                try:
                    if job.attempts + 1 >= max_attempts:
                        await app.job_manager.finish_job(job, status=Status.FAILED, delete_job=False)
                        log.warning("job %s failed: its workers died %d times", job.id, job.attempts + 1)
                    else:
                        await app.job_manager.retry_job(job)
                        log.warning("job %s (%s) was running on a worker that died: queued again", job.id,
                                    job.task_kwargs.get("file_name"))
                except Exception as e:  # noqa: BLE001 - another worker got there first
                    log.debug("stalled job %s: %s", job.id, e)
        except Exception as e:  # noqa: BLE001 - the database is away: the supervisor handles that
            log.debug("stalled-job check failed: %s", e)
        await asyncio.sleep(every)


class Supervisor:
    """Runs the queue loop until a signal (SIGTERM, SIGINT) stops it, or, with `burst`, until the queues are empty.

    Each round opens `app`, starts the database watch and `side_task()` (the stalled-job check) beside it and runs
    fresh `make_workers()` (procrastinate `Worker`s on `app`, one per queue, their own signal handlers off):
    together, or with `burst` one after the other (a later queue gets the jobs the earlier one deferred). When one
    raises one of `DATABASE_ERRORS` — or returns on its own while not in `burst` mode (a side task of it lost the
    database) — the others are stopped gracefully and the database is taken for gone: wait for it
    (`wait_for_database`), requeue the jobs held under the lost worker ids (`requeue_held_jobs`) and run again, the
    models still loaded. A signal lets the jobs in hand finish first (procrastinate's graceful stop), then `run`
    returns.
    """

    def __init__(self, app: procrastinate.App, url: str, make_workers: Callable[[], list[Worker]], *, burst: bool,
                 side_task: Callable[[], Coroutine[Any, Any, None]] | None = None):
        self.app, self.url, self.make_workers, self.burst, self.side_task = app, url, make_workers, burst, side_task
        self.stopping = asyncio.Event()
        self.running: asyncio.Task | None = None
        self.held: set[int] = set()  # the worker ids of a round that lost the database
        self.lost_at: float | None = None

    def on_signal(self) -> None:
        self.stopping.set()
        if self.running is not None:
            self.running.cancel()  # procrastinate: a cancelled worker finishes its jobs in hand, then stops

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.on_signal)
        while not self.stopping.is_set():
            workers = self.make_workers()
            try:
                if await self._round(workers):
                    return
                log.warning("the queue loop stopped by itself (it lost the database for a moment)")
            except asyncio.CancelledError:
                if self.stopping.is_set():
                    return
                raise
            except DATABASE_ERRORS as e:
                log.warning("lost the database: %s", _first_line(e))
            finally:
                self.running = None
            # procrastinate clears a worker's id only after unregistering cleanly
            self.held |= {w.worker_id for w in workers if w.worker_id is not None}
            if self.stopping.is_set():
                return
            DB_UP.set(0)
            DB_OUTAGES.inc()
            self.lost_at = self.lost_at or time.monotonic()
            if not await wait_for_database(self.url, self.stopping):
                return

    async def _round(self, workers: list[Worker]) -> bool:
        """One run of the queue loop on a freshly opened app. Returns True when it ended as asked (a signal, or
        the queues empty in `burst` mode)."""
        async with self.app.open_async():
            for worker_id in sorted(self.held):
                await requeue_held_jobs(self.app, worker_id)
            self.held.clear()
            if self.lost_at is not None:
                DB_OUTAGE_SECONDS.observe(time.monotonic() - self.lost_at)
                self.lost_at = None
            DB_UP.set(1)
            if self.stopping.is_set():
                return True
            sides = [asyncio.create_task(watch_database(self.url))]
            if self.side_task is not None:
                sides.append(asyncio.create_task(self.side_task()))
            run = _one_after_another(workers) if self.burst else _together(workers)
            self.running = asyncio.create_task(run, name="queue workers")
            try:
                await self.running
            finally:
                for side in sides:
                    side.cancel()
        return self.burst or self.stopping.is_set()


async def _one_after_another(workers: list[Worker]) -> None:
    for worker in workers:
        await worker.run()


async def _together(workers: list[Worker]) -> None:
    """Run the workers at once until one ends (returns or raises) or this is cancelled; then stop the others
    gracefully and raise the first error, if any."""
    tasks = [asyncio.create_task(w.run(), name=f"worker {w.worker_name}") for w in workers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for r in results:
        if isinstance(r, Exception):
            raise r
