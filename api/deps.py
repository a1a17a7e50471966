"""Typed dependencies for the routes (full-stack-fastapi-template style): the service, the settings, the ingest
queue, the repositories a route reads (`ImagesDep`, `ItemsDep`, `TasksDep`, `ReceiptsDep`, `LedgerDep`) and the
API-key checks."""
from __future__ import annotations

import asyncio
import hmac
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from clip_embedder.config import Settings
from clip_embedder.db.analyses import AnalysisRepository
from clip_embedder.db.images import ImageRepository
from clip_embedder.db.items import ItemRepository
from clip_embedder.db.ledger import LedgerRepository
from clip_embedder.db.receipts import ReceiptRepository
from clip_embedder.db.store import Store
from clip_embedder.db.tasks import TaskRepository
from clip_embedder.intake.ingest import Ingest
from clip_embedder.search.service import SearchService

api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="one of the keys in API_KEYS (writes; reads too when REQUIRE_KEY_FOR_READS)")


def get_service(request: Request) -> SearchService:
    service = getattr(request.app.state, "service", None)
    if service is None:
        raise HTTPException(503, "the search service is still starting", headers={"Retry-After": "5"})
    return service


def get_app_settings(request: Request) -> Settings:
    settings = getattr(request.app.state, "settings", None)
    if settings is None:
        raise HTTPException(503, "the service is still starting", headers={"Retry-After": "5"})
    return settings


def get_ingest(request: Request) -> Ingest:
    ingest = getattr(request.app.state, "ingest", None)
    if ingest is None:
        raise HTTPException(503, "the ingest queue is still starting", headers={"Retry-After": "5"})
    return ingest


async def get_store(request: Request) -> Store:
    """The database of this process (async: an attribute read, no thread hop on the hot routes)."""
    store = getattr(request.app.state, "store", None)
    if store is None:
        raise HTTPException(503, "the database connection is still starting", headers={"Retry-After": "5"})
    return store


async def get_images(request: Request) -> ImageRepository:
    return (await get_store(request)).images


async def get_items(request: Request) -> ItemRepository:
    return (await get_store(request)).items


async def get_tasks(request: Request) -> TaskRepository:
    return (await get_store(request)).tasks


async def get_analyses(request: Request) -> AnalysisRepository:
    return (await get_store(request)).analyses


async def get_receipts(request: Request) -> ReceiptRepository:
    return (await get_store(request)).receipts


async def get_ledger(request: Request) -> LedgerRepository:
    return (await get_store(request)).ledger


_analyser_lock = threading.Lock()


def get_analyser(request: Request) -> Any:
    """The analyser ANALYSIS_PROVIDER names, built on the first analysis (the local one reuses the service's detector
    and MobileNet extractor; its models load then, ~10 s once).

    Raises:
        HTTPException: 503 while the service starts, or when the provider cannot be built (its message says why).
    """
    state = request.app.state
    if getattr(state, "analyser", None) is None:
        settings, service = get_app_settings(request), get_service(request)
        with _analyser_lock:
            if getattr(state, "analyser", None) is None:
                try:
                    state.analyser = build_analyser(settings, service)
                except (FileNotFoundError, RuntimeError, ValueError) as e:
                    raise HTTPException(503, f"analysis is unavailable: {e}") from None
    return state.analyser


def build_analyser(settings: Settings, service: SearchService) -> Any:
    """The configured analyser, loaded; the local one shares the service's detector and MobileNet extractor."""
    if settings.analysis_provider != "local":
        from clip_embedder.models.registry import ANALYSIS_PROVIDERS  # noqa: PLC0415

        return ANALYSIS_PROVIDERS.create(settings.analysis_provider, settings)
    from clip_embedder.analysis.local import LocalAnalyser  # noqa: PLC0415
    from clip_embedder.models.mobilenet import MobileNetEmbedder  # noqa: PLC0415

    extractor = service.embedders.get("mobilenet")
    return LocalAnalyser.from_settings(settings, detector=service.detector, extractor=extractor if isinstance(
        extractor, MobileNetEmbedder) else None).load()


def check_key(settings: Settings, key: str | None) -> None:
    if not key:
        raise HTTPException(401, "this route needs an API key in the X-API-Key header (one of API_KEYS)"
                            if settings.api_keys else "this route needs an API key, and the server has none: "
                            "set API_KEYS (comma-separated) and send one in the X-API-Key header",
                            headers={"WWW-Authenticate": "APIKey"})
    given = key.encode()
    # compare against every key, in constant time, so timing tells nothing about which one is close
    ok = False
    for k in settings.api_keys:
        ok |= hmac.compare_digest(given, k.get_secret_value().encode())
    if not ok:
        raise HTTPException(403, "the X-API-Key is not one of API_KEYS")


def require_write_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Writes (upload, scan, delete, reload) need a valid key: 401 without one, 403 with a wrong one."""
    check_key(get_app_settings(request), key)


def require_read_key(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """With REQUIRE_KEY_FOR_READS, reads need a valid key too (`create_app` adds this to the read routers)."""
    check_key(get_app_settings(request), key)


@asynccontextmanager
async def slot(request: Request, kind: str) -> AsyncIterator[None]:
    """Hold one of the `kind` ("image" or "text") slots; waits up to BUSY_WAIT_SECONDS (in the event loop, not in
    one of the threads that sync routes, health among them, run in), then 503 + Retry-After."""
    limits = getattr(request.app.state, "limits", None)
    if limits is None:
        raise HTTPException(503, "the service is still starting", headers={"Retry-After": "5"})
    sem: asyncio.Semaphore = limits[kind]
    settings: Settings = request.app.state.settings
    try:
        await asyncio.wait_for(sem.acquire(), timeout=settings.busy_wait_seconds or 0.001)
    except TimeoutError:
        setting = "MAX_CONCURRENT_IMAGE_REQUESTS" if kind == "image" else "MAX_CONCURRENT_TEXT_SEARCHES"
        raise HTTPException(503, f"the service is busy with other {kind} requests ({setting}); retry shortly",
                            headers={"Retry-After": "2"}) from None
    try:
        yield
    finally:
        sem.release()


def _slot(kind: str):
    async def hold(request: Request) -> AsyncIterator[None]:
        async with slot(request, kind):
            yield
    return hold


def make_limits(settings: Settings) -> dict[str, asyncio.Semaphore]:
    """One semaphore per kind of heavy request (set on `app.state.limits` at start-up, on the event loop)."""
    return {"image": asyncio.Semaphore(settings.max_concurrent_image_requests),
            "text": asyncio.Semaphore(settings.max_concurrent_text_searches)}


ServiceDep = Annotated[SearchService, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
IngestDep = Annotated[Ingest, Depends(get_ingest)]
ImagesDep = Annotated[ImageRepository, Depends(get_images)]
ItemsDep = Annotated[ItemRepository, Depends(get_items)]
TasksDep = Annotated[TaskRepository, Depends(get_tasks)]
AnalysesDep = Annotated[AnalysisRepository, Depends(get_analyses)]
StoreDep = Annotated[Store, Depends(get_store)]
ReceiptsDep = Annotated[ReceiptRepository, Depends(get_receipts)]
LedgerDep = Annotated[LedgerRepository, Depends(get_ledger)]
WriteKey = Depends(require_write_key)
#: a slot among MAX_CONCURRENT_IMAGE_REQUESTS (decoding and model work on pixels) or text searches
ImageSlot = Depends(_slot("image"))
TextSlot = Depends(_slot("text"))
ReadKey = Depends(require_read_key)
