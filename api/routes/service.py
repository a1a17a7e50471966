"""Service: health and reload (metrics are mounted by `api.main` at /metrics)."""
from __future__ import annotations

import time

import psycopg
from fastapi import APIRouter, HTTPException, Request

from api.deps import ServiceDep, WriteKey
from api.schemas import ERRORS, ErrorResponse, HealthResponse

router = APIRouter(prefix="/api", tags=["service"])


@router.get("/health", response_model=HealthResponse, responses={503: {"model": ErrorResponse}})
def health(service: ServiceDep, request: Request):
    """Spaces (model, weights, dim, vectors, FAISS state), row counts, queue depth, the detector, refused
    spaces, labels. 503 at once while the database is away."""
    follower = getattr(request.app.state, "follower", None)
    if follower is not None and follower.db_down is not None:
        since, why = follower.db_down
        raise HTTPException(503, f"the database has been unavailable for {time.monotonic() - since:.0f}s ({why}); "
                                 "reconnecting", headers={"Retry-After": "5"})
    try:  # a one-second probe, so health answers fast even before the follower has noticed
        with service.store.pool.connection(timeout=1.0) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as e:
        raise HTTPException(503, f"the database is unavailable ({type(e).__name__}); reconnecting",
                            headers={"Retry-After": "5"}) from None
    h = service.health()
    h["queue"] = service.store.queue_depth()
    h["workers"] = service.store.active_workers(2 * service.settings.worker_stalled_after)
    return HealthResponse(status="ok" if service.indexes else "degraded", labels=service.store.labels(), **h)


@router.post("/reload", responses=ERRORS, dependencies=[WriteKey])
def reload(service: ServiceDep) -> dict[str, str]:
    """Rebuild each stale FAISS index from Postgres (running APIs follow workers' writes by themselves;
    this is for operators)."""
    return service.reload()
