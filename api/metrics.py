"""Prometheus: request metrics (prometheus-fastapi-instrumentator) plus the index and queue, read
from PostgreSQL at scrape time (so every API process reports the same truth)."""
from __future__ import annotations

import logging

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_fastapi_instrumentator import Instrumentator

log = logging.getLogger("api")


class IndexCollector:
    """Gauges: queue jobs by status, vectors per space (in Postgres and in this process's FAISS), images."""

    def __init__(self, app: FastAPI):
        self.app = app

    def collect(self):
        service = getattr(self.app.state, "service", None)
        if service is None:
            return
        try:
            depth = service.store.tasks.queue_depth()
            counts = service.store.counts()
        except Exception as e:  # a scrape must not fail because the database is away
            log.warning("metrics: %s", e)
            return
        q = GaugeMetricFamily("clip_embedder_queue_jobs", "indexing jobs by status (todo = queued, doing = "
                              "running; succeeded and failed are jobs done)", labels=["status"])
        for status in ("todo", "doing", "succeeded", "failed", "cancelled", "aborted"):
            q.add_metric([status], depth.get(status, 0))
        yield q
        v = GaugeMetricFamily("clip_embedder_vectors", "vectors per embedding space in PostgreSQL", labels=["space"])
        f = GaugeMetricFamily("clip_embedder_faiss_vectors", "vectors per space in this process's FAISS index",
                              labels=["space"])
        for key, n in counts.items():
            if key.startswith("vectors_"):
                v.add_metric([key[len("vectors_"):]], n)
        for space, ix in service.indexes.items():
            f.add_metric([space], ix.ntotal)
        yield v
        yield f
        yield GaugeMetricFamily("clip_embedder_images", "indexed images", value=counts.get("images", 0))
        a = GaugeMetricFamily("clip_embedder_analysed_images", "images with a stored analysis: all of them, those "
                              "sensitive, those with a face", labels=["kind"])
        for kind in ("analysed", "sensitive", "with_faces"):
            a.add_metric([kind], counts.get(kind, 0))
        yield a


def instrument(app: FastAPI) -> None:
    """Mount GET /metrics (a registry per app, so several apps in one process do not collide)."""
    registry = CollectorRegistry()
    registry.register(IndexCollector(app))
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(
        app, endpoint="/metrics", include_in_schema=False)
