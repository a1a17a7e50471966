"""The FastAPI service: `uvicorn api.main:app`. Swagger UI at /docs.

`create_app` only assembles: the lifespan (`api.lifespan`: detector, embedders and FAISS indexes loaded once; the
ingest queue opened; a follower keeping FAISS fresh from PostgreSQL notifications), middleware (`api.limits`: body
caps, OPTIONS), error handlers (`api.errors`) and one router per resource (`api/routes/`).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi_offline import FastAPIOffline

from api import errors
from api.deps import ReadKey
from api.lifespan import make_lifespan
from api.limits import JSON_BODY_MAX, MULTIPART_ALLOWANCE, BodyCap, BodyLimitMiddleware, OptionsMiddleware
from api.metrics import instrument
from api.routes import analysis, collections, images, ledger, receipts, search, service, tasks
from clip_embedder import offline  # noqa: F401
from clip_embedder.config import Settings, get_settings

log = logging.getLogger("api")
SEARCH_IMAGE_MAX_PARTS = 16  # multipart parts of an image search: its one image, and room for a client's own fields
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


def _body_cap(app: FastAPI, settings: Settings | None) -> Callable[[str, str], BodyCap]:
    """The body caps of a request: uploads are refused before the multipart body is spooled to disk, and at the
    part past their file limit before it is parsed; every other body is small JSON."""

    def cap_for(method: str, path: str) -> BodyCap:
        s = getattr(app.state, "settings", None) or settings or get_settings()
        if method == "POST" and path in ("/api/search_image", "/api/analyze"):
            return BodyCap(s.max_upload_bytes + MULTIPART_ALLOWANCE, "MAX_UPLOAD_BYTES",
                           SEARCH_IMAGE_MAX_PARTS, "one image and a few fields")
        if method == "POST" and path in ("/api/images", "/api/receipts"):
            return BodyCap((s.max_upload_bytes + MULTIPART_ALLOWANCE) * s.max_files_per_upload,
                           "MAX_UPLOAD_BYTES per file x MAX_FILES_PER_UPLOAD", s.max_files_per_upload,
                           "MAX_FILES_PER_UPLOAD")
        return BodyCap(JSON_BODY_MAX, "1 MiB for JSON bodies")
    return cap_for


def _path_methods(app: FastAPI) -> Callable[[str], set[str]]:
    """The methods the app serves on a path (for OPTIONS and 405s), from its OpenAPI schema."""

    def methods_for(path: str) -> set[str]:
        if not hasattr(app.state, "path_methods"):  # path template regex → methods, from the OpenAPI schema
            app.state.path_methods = [
                (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(p)) + "$"), {m.upper() for m in ops})
                for p, ops in app.openapi()["paths"].items()]
        return {m for regex, ops in app.state.path_methods if regex.match(path) for m in ops}
    return methods_for


def _redirect_to_docs() -> RedirectResponse:
    return RedirectResponse("/docs")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. `settings` defaults to the environment / `.env` (read at start-up)."""
    _install_log_truncation()
    # FastAPIOffline: Swagger UI (/docs) and ReDoc (/redoc) from the package's own files, not a CDN
    app = FastAPIOffline(title="Object-level visual search", version="0.2.0", lifespan=make_lifespan(settings),
                  description="Image-to-image and text-to-image search over detected objects and whole images. "
                              "Results from several embedding spaces are fused with reciprocal rank fusion. "
                              "Add photos with `POST /api/images` (an `X-API-Key` is needed for writes: "
                              "press Authorize) and follow them with `GET /api/tasks?batch=…`. Receipt photos go to "
                              "`POST /api/receipts` and become rows of the household ledger (`GET /api/ledger`).")
    app.add_middleware(BodyLimitMiddleware, cap_for=_body_cap(app, settings))
    app.add_middleware(OptionsMiddleware, methods_for=_path_methods(app))
    errors.install(app)
    app.add_api_route("/", _redirect_to_docs, methods=["GET"], include_in_schema=False)
    # reads are open unless REQUIRE_KEY_FOR_READS: the schema says which (Swagger's lock icons)
    reads = [ReadKey] if _reads_need_key(settings) else []
    for r in (search.router, images.router, tasks.router, analysis.router, receipts.router, ledger.router):
        app.include_router(r, dependencies=reads)
    app.include_router(collections.router)
    app.include_router(service.router)
    instrument(app)
    return app


app = create_app()
