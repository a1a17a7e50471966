"""Service: health and reload (metrics are mounted by `api.main` at /metrics)."""
from __future__ import annotations

from fastapi import APIRouter

from api.deps import ServiceDep, WriteKey
from api.schemas import ERRORS, HealthResponse

router = APIRouter(prefix="/api", tags=["service"])


@router.get("/health", response_model=HealthResponse)
def health(service: ServiceDep):
    """Spaces (model, weights, dim, vectors, FAISS state), row counts, queue depth, the detector, refused
    spaces, labels."""
    h = service.health()
    h["queue"] = service.store.queue_depth()
    h["workers"] = service.store.active_workers(2 * service.settings.worker_stalled_after)
    return HealthResponse(status="ok" if service.indexes else "degraded", labels=service.store.labels(), **h)


@router.post("/reload", responses=ERRORS, dependencies=[WriteKey])
def reload(service: ServiceDep) -> dict[str, str]:
    """Rebuild each stale FAISS index from Postgres (running APIs follow workers' writes by themselves;
    this is for operators)."""
    return service.reload()
