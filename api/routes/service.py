"""Service: health and reload (metrics are mounted by `api.main` at /metrics)."""
from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from api.deps import ServiceDep, WriteKey, get_service
from api.schemas import ERRORS, ErrorResponse, HealthResponse

router = APIRouter(prefix="/api", tags=["service"])


class StaleWhileRevalidate:
    """A value recomputed at most every `max_age` seconds, never while a caller waits (after the first):
    a caller finding it older starts one background refresh and gets the previous value at once. So
    `/api/health` answers in about a millisecond while its row counts (a `count(*)` over a million items
    takes tens of milliseconds) are at most `max_age` plus one refresh old. `max_age` 0 computes every time.
    """

    def __init__(self, max_age: float):
        self.max_age = max_age
        self._value: Any = None
        self._at = 0.0
        self._lock = threading.Lock()
        self._refreshing = False

    @property
    def ready(self) -> bool:
        """True when `get` answers from memory (a value is cached and caching is on)."""
        return self.max_age > 0 and self._value is not None

    def get(self, compute: Callable[[], Any]) -> Any:
        """The cached value (computed now on the first call, or when `max_age` is 0).

        Raises:
            whatever `compute` raises, on the calls that run it in the caller's thread.
        """
        if self.max_age <= 0:
            return compute()
        with self._lock:
            if self._value is None:
                self._value, self._at = compute(), time.monotonic()
                return self._value
            if time.monotonic() - self._at > self.max_age and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, args=(compute,), daemon=True, name="health-refresh").start()
            return self._value

    def _refresh(self, compute: Callable[[], Any]) -> None:
        try:
            value = compute()
            with self._lock:
                self._value, self._at = value, time.monotonic()
        except Exception:  # the database went away: the next caller tries again (the probe reports it)
            pass
        finally:
            self._refreshing = False


class DatabaseProbe:
    """Health's database check: libpq's `PQping`, what `pg_isready` runs, in a thread (one C call: no Python round
    trips waiting for the GIL on a busy event loop, unlike a connection and `SELECT 1`, which cost ~10 awaits).
    A new connection attempt each time: not a pooled connection (under load every pooled one can be busy with
    searches), and not a kept one (its backend can outlive a killed postmaster for a moment and still answer)."""

    def __init__(self, url: str):
        self._conninfo = url.encode()

    def _ping(self) -> None:
        from psycopg import pq  # noqa: PLC0415

        got = pq.PGconn.ping(self._conninfo)
        if got != pq.Ping.OK:
            raise OSError(f"PostgreSQL answers {pq.Ping(got).name} to a ping")

    async def check(self, timeout: float = 1.0) -> None:
        """Raises OSError / TimeoutError when the database does not accept connections within `timeout`."""
        await asyncio.wait_for(asyncio.to_thread(self._ping), timeout)


@router.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
async def health(request: Request):
    """Spaces (model, weights, dim, vectors, FAISS state), row counts, queue depth, the detector, refused
    spaces, labels. 503 at once while the database is away. Everything but the database probe is at most
    HEALTH_MAX_AGE seconds old (refreshed in the background), so health answers at once under load."""
    service = get_service(request)
    follower = getattr(request.app.state, "follower", None)
    if follower is not None and follower.db_down is not None:
        since, why = follower.db_down
        raise HTTPException(503, f"the database has been unavailable for {time.monotonic() - since:.0f}s ({why}); "
                                 "reconnecting", headers={"Retry-After": "5"})
    try:  # a one-second probe, so health answers fast even before the follower has noticed
        await request.app.state.db_probe.check(1.0)
    except (TimeoutError, OSError) as e:
        raise HTTPException(503, f"the database is unavailable ({type(e).__name__}); reconnecting",
                            headers={"Retry-After": "5"}) from None

    def compute() -> HealthResponse:
        h = service.health()
        h["queue"] = service.store.queue_depth()
        h["workers"] = service.store.active_workers(2 * service.settings.worker_stalled_after)
        return HealthResponse(status="ok" if service.indexes else "degraded", labels=service.store.labels(), **h)

    cache: StaleWhileRevalidate = request.app.state.health_cache
    if cache.ready:
        return cache.get(compute)  # from memory, on the event loop (a stale value starts a background refresh)
    return await run_in_threadpool(cache.get, compute)


@router.post("/reload", responses=ERRORS, dependencies=[WriteKey])
def reload(service: ServiceDep) -> dict[str, str]:
    """Rebuild each stale FAISS index from Postgres (running APIs follow workers' writes by themselves;
    this is for operators)."""
    return service.reload()
