"""Error handlers: every error is `{"detail": str}` with the status the exception stands for (`install` adds them)."""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout

from clip_embedder.images import ImageError
from clip_embedder.intake.ingest import QueueFullError, ScanPathError, ScanRefusedError
from clip_embedder.models.embedders import SpaceMismatchError
from clip_embedder.search.records import QueryError

log = logging.getLogger("api")


async def invalid_request(_: Request, e: Exception) -> JSONResponse:
    """422: one documented shape for every error, {"detail": str}, naming each bad field."""
    assert isinstance(e, RequestValidationError)
    parts = []
    for err in e.errors()[:10]:
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'syntax')})")
            continue
        where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts)[:2000]}, status_code=422)


async def database_away(_: Request, e: Exception) -> JSONResponse:
    """503 + Retry-After: the database is unreachable (the pool reconnects by itself)."""
    log.warning("database unavailable: %s", e)
    return JSONResponse({"detail": "the database is unavailable; the service reconnects by itself, retry "
                                   "shortly"}, status_code=503, headers={"Retry-After": "5"})


async def with_own_status(_: Request, e: Exception) -> JSONResponse:
    """The status the exception carries (`ImageError.status`, `QueryError.status`)."""
    return JSONResponse({"detail": str(e)}, status_code=getattr(e, "status", 400))


async def queue_full(_: Request, e: Exception) -> JSONResponse:
    """503 + Retry-After: the queue holds QUEUE_MAX_DEPTH jobs."""
    assert isinstance(e, QueueFullError)
    return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after)})


def with_status(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A handler answering `status` with the exception's message."""
    async def handler(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(e)}, status_code=status)
    return handler


#: exception class → its handler, in the order they are installed
HANDLERS: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
    (RequestValidationError, invalid_request),
    (psycopg.OperationalError, database_away),
    (PoolTimeout, database_away),
    (ImageError, with_own_status),
    (QueryError, with_own_status),
    (SpaceMismatchError, with_status(409)),
    (QueueFullError, queue_full),
    (ScanRefusedError, with_status(403)),
    (ScanPathError, with_status(422)),
    (FileNotFoundError, with_status(404)),
]


def install(app: FastAPI) -> None:
    """Add every handler of `HANDLERS` to `app`."""
    for exc, handler in HANDLERS:
        app.add_exception_handler(exc, handler)
