"""Parts of the API that need no running service: log truncation, the health cache, the error handlers."""
from __future__ import annotations

import time

from pydantic import BaseModel

from tests.helpers import wait_for


class TopK(BaseModel):
    """A JSON body with one integer field."""

    top_k: int


def test_access_log_values_are_truncated():
    import logging

    from api.main import LOG_VALUE_MAX, TruncateLongValues

    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                            ("127.0.0.1:1", "GET", "/api/search_text?query=" + "x" * 100_000, "1.1", 422), None)
    TruncateLongValues().filter(rec)
    line = rec.getMessage()
    assert len(line) < LOG_VALUE_MAX + 100 and "(+99723 chars)" in line


def test_health_counts_are_refreshed_in_the_background():
    """/api/health's DB-heavy part: computed on the first call, then served from memory; a call after
    `max_age` gets the previous value at once and starts one refresh, whose result the next call sees."""
    import threading

    from api.health import StaleWhileRevalidate

    calls: list[int] = []
    release = threading.Event()

    def compute() -> int:
        calls.append(len(calls))
        if len(calls) > 1:
            release.wait(10)  # a slow refresh (a count over a million rows)
        return len(calls)

    cache = StaleWhileRevalidate(max_age=0.3)
    assert cache.get(compute) == 1 and cache.get(compute) == 1 and len(calls) == 1
    time.sleep(0.35)
    t = time.perf_counter()
    assert cache.get(compute) == 1 and cache.get(compute) == 1  # stale: the old value, at once
    assert time.perf_counter() - t < 0.5
    release.set()
    assert wait_for(lambda: cache.get(compute) == 2) and len(calls) == 2  # one refresh, not one per caller
    assert StaleWhileRevalidate(0).get(compute) == 3  # max_age 0: computed every call


def test_every_error_is_a_detail_with_the_status_its_exception_stands_for():
    import psycopg
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from api import errors
    from clip_embedder.images import ImageError
    from clip_embedder.intake.ingest import QueueFullError, ScanPathError, ScanRefusedError
    from clip_embedder.models.embedders import SpaceMismatchError
    from clip_embedder.search.records import QueryError

    app = FastAPI()
    errors.install(app)
    raised = {"image": ImageError("not an image", 415), "query": QueryError("no such space", 409),
              "mismatch": SpaceMismatchError("built by another model"), "full": QueueFullError("queue is full"),
              "scan": ScanRefusedError("outside SCAN_ROOTS"),
              "path": ScanPathError("~nosuchuser cannot be looked up"), "missing": FileNotFoundError("no such file"),
              "db": psycopg.OperationalError("connection refused")}

    @app.get("/raise/{what}")
    def boom(what: str):
        raise raised[what]

    @app.post("/body")
    def body(b: TopK):
        return b

    want = {"image": 415, "query": 409, "mismatch": 409, "full": 503, "scan": 403, "path": 422, "missing": 404,
            "db": 503}
    with TestClient(app) as c:
        for what, status in want.items():
            r = c.get(f"/raise/{what}")
            assert r.status_code == status and isinstance(r.json()["detail"], str), what
        assert c.get("/raise/full").headers["retry-after"] and c.get("/raise/db").headers["retry-after"] == "5"
        bad = c.post("/body", json={"top_k": "many"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("top_k:")
        broken = c.post("/body", content=b"{nope", headers={"content-type": "application/json"})
        assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]


def test_uvicorn_finds_the_app_with_every_router():
    """`uvicorn api.main:app` (the README's command, compose's API service) finds an app that serves every resource
    (building it loads nothing: the models load in its lifespan)."""
    from fastapi import FastAPI

    from api.main import app

    assert isinstance(app, FastAPI)
    paths = app.openapi()["paths"]
    for path in ("/api/search_text", "/api/search_image", "/api/images", "/api/images/{image_id}", "/api/tasks",
                 "/api/tasks/{task_id}", "/api/collections/scan", "/api/health", "/api/reload"):
        assert path in paths, path


def test_the_page_sizes_its_uploaders_from_the_service():
    from ui.common import DEFAULT_UPLOAD_MB, upload_mb

    assert upload_mb({"limits": {"max_upload_bytes": 10 * 2**20}}) == 10
    assert upload_mb({"limits": {"max_upload_bytes": 10 * 2**20 + 1}}) == 11  # never below the service's limit
    assert upload_mb({"limits": {"max_upload_bytes": 1000}}) == 1
    assert upload_mb({}) == upload_mb({"limits": None}) == DEFAULT_UPLOAD_MB  # an older API
