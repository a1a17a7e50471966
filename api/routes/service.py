"""Service: health and reload (metrics are mounted by `api.main` at /metrics)."""
from __future__ import annotations

import time

from fastapi import APIRouter, HTTPException, Request
from starlette.concurrency import run_in_threadpool

from api.deps import ItemsDep, ServiceDep, TasksDep, WriteKey, get_service
from api.health import StaleWhileRevalidate
from api.schemas import ERRORS, ErrorResponse, HealthResponse, UploadLimits

router = APIRouter(prefix="/api", tags=["service"])


@router.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
async def health(request: Request, items: ItemsDep, tasks: TasksDep):
    """Spaces (model, weights, dim, vectors, FAISS state), row counts, queue depth, the detector, refused
    spaces, labels. 503 at once while the database is away. Everything but the database probe is at most
    HEALTH_MAX_AGE seconds old (refreshed in the background), so health answers at once under load."""
    service = get_service(request)
    follower = getattr(request.app.state, "follower", None)
    if follower is not None and follower.db_down is not None:
        since, _ = follower.db_down  # the driver's raw error is in the log (the follower logged it once)
        raise HTTPException(503, f"the database is not answering (for {time.monotonic() - since:.0f}s); "
                                 "reconnecting", headers={"Retry-After": "5"})
    try:  # the latest ping (at most DB_PROBE_MAX_AGE old), so health answers fast even before the follower notices
        await request.app.state.db_probe.check(1.0)
    except (TimeoutError, OSError) as e:
        raise HTTPException(503, f"the database is unavailable ({type(e).__name__}); reconnecting",
                            headers={"Retry-After": "5"}) from None

    def compute() -> HealthResponse:
        h = service.health()
        h["queue"] = tasks.queue_depth()
        h["workers"] = tasks.active_workers(2 * service.settings.worker_stalled_after)
        h["limits"] = UploadLimits(max_upload_bytes=service.settings.max_upload_bytes,
                                   max_files_per_upload=service.settings.max_files_per_upload)
        return HealthResponse(status="ok" if service.indexes else "degraded", labels=items.labels(), **h)

    cache: StaleWhileRevalidate = request.app.state.health_cache
    if cache.ready:
        value = cache.get(compute)  # from memory, on the event loop (a stale value starts a background refresh)
    else:
        value = await run_in_threadpool(cache.get, compute)
    if value.workers == 0:  # never "no worker" from a cached answer while one has just started: count them now
        workers = await run_in_threadpool(tasks.active_workers, 2 * service.settings.worker_stalled_after)
        if workers:
            value = value.model_copy(update={"workers": workers})
    return value


@router.post("/reload", responses=ERRORS, dependencies=[WriteKey])
def reload(service: ServiceDep) -> dict[str, str]:
    """Rebuild each stale FAISS index from Postgres (running APIs follow workers' writes by themselves;
    this is for operators)."""
    return service.reload()
