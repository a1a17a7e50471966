"""Collections: index a folder on the server (one under SCAN_ROOTS) where it lies."""
from __future__ import annotations

from fastapi import APIRouter

from api.deps import IngestDep, WriteKey
from api.routes.tasks import batch_model
from api.schemas import ERRORS, ScanRequest, TaskBatch

router = APIRouter(prefix="/api/collections", tags=["collections"], dependencies=[WriteKey])


@router.post("/scan", status_code=202, response_model=TaskBatch, responses=ERRORS)
def scan(req: ScanRequest, ingest: IngestDep):
    """Queue every image under a server folder; its files are indexed where they are (not copied).
    Only folders under SCAN_ROOTS may be scanned (403 otherwise). Poll `GET /api/tasks?batch=…`."""
    batch, tasks = ingest.scan(req.path)
    return batch_model(batch, tasks)
