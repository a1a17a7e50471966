"""Tasks: where each uploaded or scanned file stands (queued → running → succeeded | failed)."""
from __future__ import annotations

from collections import Counter

from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam

from api.deps import TasksDep
from api.schemas import ERRORS, TaskBatch, TaskPublic
from clip_embedder.db.records import TaskRecord

router = APIRouter(prefix="/api", tags=["tasks"])

_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"


def task_model(t: TaskRecord) -> TaskPublic:
    return TaskPublic(id=t.id, batch=t.batch, status=t.status, file_name=t.file_name,  # type: ignore[arg-type]
                      image_id=t.image_id, attempts=t.attempts, error=t.error, sha256=t.sha256,
                      created_at=t.created_at, updated_at=t.updated_at,
                      enrichments={k: v for k, v in (("ocr", t.ocr), ("analysis", t.analysis)) if v},  # type: ignore[misc]
                      kind=t.kind, receipt_id=t.receipt_id)  # type: ignore[arg-type]


def batch_model(batch: str, tasks: list[TaskRecord]) -> TaskBatch:
    return TaskBatch(batch=batch, tasks=[task_model(t) for t in tasks], counts=dict(Counter(t.status for t in tasks)))


@router.get("/tasks/{task_id}", response_model=TaskPublic, responses=ERRORS)
def get_task(tasks: TasksDep, task_id: str = PathParam(..., pattern=_UUID)):
    """One task: status, attempts, error, and the image id once it is searchable."""
    found = tasks.get(task_id=task_id.lower())
    if not found:
        raise HTTPException(404, f"no task with id {task_id}")
    return task_model(found[0])


@router.get("/tasks", response_model=TaskBatch, responses=ERRORS)
def list_tasks(repo: TasksDep, batch: str = Query(..., pattern=_UUID, description="the batch id of an upload "
                                                                                      "or scan")):
    """Every task of one upload or scan, with counts by status (a progress bar's input)."""
    tasks = repo.get(batch=batch.lower(), limit=100_000)
    if not tasks:
        raise HTTPException(404, f"no batch with id {batch}")
    return batch_model(batch.lower(), tasks)
