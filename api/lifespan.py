"""The API's lifespan: what is loaded once at start-up (the store, the detector, the embedders and FAISS indexes,
the ingest queue, the follower that keeps FAISS fresh from the database's notifications) and released at shutdown."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI

from api.deps import make_limits
from api.health import DatabaseProbe, StaleWhileRevalidate
from clip_embedder.config import Settings, get_settings
from clip_embedder.db.store import Store
from clip_embedder.indexing.live import IndexFollower
from clip_embedder.intake.ingest import Ingest
from clip_embedder.intake.originals import open_originals
from clip_embedder.intake.queue import sync_app
from clip_embedder.models.detector import load_detector
from clip_embedder.models.runtimes import freeze_heap
from clip_embedder.search.service import SearchService

log = logging.getLogger("api")


def _warm_up_then_freeze(warm_up: Callable[[], None]) -> None:
    warm_up()
    freeze_heap()  # the first detection imported torchvision and set ONNX Runtime up: freeze those objects too


def make_lifespan(settings: Settings | None) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan of an app serving `settings` (None: the environment / `.env`, read at start-up).

    At start-up it fills `app.state`: settings, limits, health_cache, db_probe, store, service, ingest, follower.

    Raises (at start-up):
        whatever opening the database, loading the detector or the spaces raised (logged in one line first).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
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
        app.state.store = store
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
        app.state.service = app.state.ingest = app.state.store = None
        try:
            svc.save_indexes()
        except Exception as e:  # the files are derived; the next start rebuilds them
            log.warning("could not save FAISS indexes: %s", e)
        queue.close()
        store.close()

    return lifespan
