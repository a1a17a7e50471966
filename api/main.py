"""The FastAPI service: `uvicorn api.main:app`. Swagger UI at /docs.

`create_app` only wires: the lifespan (detector, embedders and FAISS indexes loaded once; the ingest
queue opened; a follower keeping FAISS fresh from PostgreSQL notifications), middleware (upload
caps), error handlers and one router per resource (`api/routes/`).
"""
from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import asynccontextmanager

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from psycopg_pool import PoolTimeout

from api.deps import ReadKey, make_limits
from api.limits import JSON_BODY_MAX, MULTIPART_ALLOWANCE, BodyLimitMiddleware, OptionsMiddleware
from api.metrics import instrument
from api.routes import collections, images, search, service, tasks
from api.routes.service import DatabaseProbe, StaleWhileRevalidate
from clip_embedder import offline  # noqa: F401
from clip_embedder.config import Settings, get_settings
from clip_embedder.db.store import Store
from clip_embedder.images import ImageError
from clip_embedder.indexing.live import IndexFollower
from clip_embedder.intake.ingest import Ingest, QueueFullError, ScanRefusedError
from clip_embedder.intake.originals import open_originals
from clip_embedder.intake.queue import sync_app
from clip_embedder.models.detector import load_detector
from clip_embedder.models.embedders import SpaceMismatchError
from clip_embedder.models.runtimes import freeze_heap
from clip_embedder.search.records import QueryError
from clip_embedder.search.service import SearchService

log = logging.getLogger("api")
LOG_VALUE_MAX = 300  # characters of one logged value (a request path with its query string, say)


class TruncateLongValues(logging.Filter):
    """Cut each long argument of a log record (uvicorn's access log gets the whole query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(a[:LOG_VALUE_MAX] + f"…(+{len(a) - LOG_VALUE_MAX} chars)"
                                if isinstance(a, str) and len(a) > LOG_VALUE_MAX else a for a in record.args)
        return True


def _install_log_truncation() -> None:
    for name in ("uvicorn.access", "uvicorn.error", "api"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, TruncateLongValues) for f in logger.filters):
            logger.addFilter(TruncateLongValues())


def _reads_need_key(settings: Settings | None) -> bool:
    """REQUIRE_KEY_FOR_READS, read without caching the process-wide settings at import time (an invalid
    environment is reported by the lifespan, in one readable line)."""
    if settings is not None:
        return settings.require_key_for_reads
    try:
        return Settings().require_key_for_reads
    except ValueError:
        return False


def _warm_up_then_freeze(warm_up: Callable[[], None]) -> None:
    warm_up()
    freeze_heap()  # the first detection imported torchvision and set ONNX Runtime up: freeze those objects too


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. `settings` defaults to the environment / `.env` (read at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = settings or get_settings()
        t0 = time.perf_counter()
        store = Store.open(s, max_size=8)
        queue = sync_app(store.url)
        try:
            detector = load_detector(s)
            svc = SearchService.create(s, store, detector)
            queue.open()
        except Exception as e:
            log.error("start-up failed: %s", e)  # one readable line above uvicorn's traceback
            store.close()
            raise
        app.state.settings = s
        app.state.limits = make_limits(s)
        app.state.health_cache = StaleWhileRevalidate(s.health_max_age)
        app.state.db_probe = DatabaseProbe(store.url)
        app.state.service = svc
        app.state.ingest = Ingest(s, store, open_originals(s.storage_root), queue)
        follower = IndexFollower(store.url, lambda removed, reset: svc.refresh(removed, reset),
                                 interval=s.index_refresh_seconds).start()
        app.state.follower = follower
        if not s.api_keys:
            log.warning("API_KEYS is empty: uploads, scans, deletes and reloads are refused until it is set")
        log.info("search service ready in %.1fs", time.perf_counter() - t0)
        freeze_heap()
        # the first detection pays for deferred imports and ONNX Runtime's first-run set-up: done here, behind the
        # first answers, not by the first image query
        threading.Thread(target=_warm_up_then_freeze, args=(detector.warm_up,), name="detector-warm-up",
                         daemon=True).start()
        yield
        follower.stop()
        app.state.service = app.state.ingest = None
        try:
            svc.save_indexes()
        except Exception as e:  # the files are derived; the next start rebuilds them
            log.warning("could not save FAISS indexes: %s", e)
        queue.close()
        store.close()

    _install_log_truncation()
    app = FastAPI(title="Object-level visual search", version="0.2.0", lifespan=lifespan,
                  description="Image-to-image and text-to-image search over detected objects and whole images. "
                              "Results from several embedding spaces are fused with reciprocal rank fusion. "
                              "Add photos with `POST /api/images` (an `X-API-Key` is needed for writes: "
                              "press Authorize) and follow them with `GET /api/tasks?batch=…`.")

    def cap_for(method: str, path: str) -> tuple[int, str]:
        # uploads are refused before the multipart body is spooled to disk; every other body is small JSON
        s = getattr(app.state, "settings", None) or settings or get_settings()
        if method == "POST" and path == "/api/search_image":
            return s.max_upload_bytes + MULTIPART_ALLOWANCE, "MAX_UPLOAD_BYTES"
        if method == "POST" and path == "/api/images":
            return (s.max_upload_bytes + MULTIPART_ALLOWANCE) * s.max_files_per_upload, \
                "MAX_UPLOAD_BYTES per file x MAX_FILES_PER_UPLOAD"
        return JSON_BODY_MAX, "1 MiB for JSON bodies"

    app.add_middleware(BodyLimitMiddleware, cap_for=cap_for)

    def methods_for(path: str) -> set[str]:
        if not hasattr(app.state, "path_methods"):  # path template regex → methods, from the OpenAPI schema
            app.state.path_methods = [
                (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(p)) + "$"), {m.upper() for m in ops})
                for p, ops in app.openapi()["paths"].items()]
        return {m for regex, ops in app.state.path_methods if regex.match(path) for m in ops}

    app.add_middleware(OptionsMiddleware, methods_for=methods_for)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError):
        # one documented shape for every error: {"detail": str}, naming each bad field
        parts = []
        for err in e.errors()[:10]:
            if err.get("type") == "json_invalid":
                parts.append(f"the request body is not valid JSON ({err.get('ctx', {}).get('error', 'syntax')})")
                continue
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)[:2000]}, status_code=422)

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database_away(_: Request, e: Exception):
        log.warning("database unavailable: %s", e)
        return JSONResponse({"detail": "the database is unavailable; the service reconnects by itself, retry "
                                       "shortly"}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(ImageError)
    async def _image_error(_: Request, e: ImageError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, e: QueryError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(SpaceMismatchError)
    async def _mismatch(_: Request, e: SpaceMismatchError):
        return JSONResponse({"detail": str(e)}, status_code=409)

    @app.exception_handler(QueueFullError)
    async def _queue_full(_: Request, e: QueueFullError):
        return JSONResponse({"detail": str(e)}, status_code=503, headers={"Retry-After": str(e.retry_after)})

    @app.exception_handler(ScanRefusedError)
    async def _scan_refused(_: Request, e: ScanRefusedError):
        return JSONResponse({"detail": str(e)}, status_code=403)

    @app.exception_handler(FileNotFoundError)
    async def _not_found(_: Request, e: FileNotFoundError):
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/docs")

    # reads are open unless REQUIRE_KEY_FOR_READS: the schema says which (Swagger's lock icons)
    reads = [ReadKey] if _reads_need_key(settings) else []
    for r in (search.router, images.router, tasks.router):
        app.include_router(r, dependencies=reads)
    app.include_router(collections.router)
    app.include_router(service.router)
    instrument(app)
    return app


app = create_app()
