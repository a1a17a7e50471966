"""The FastAPI service: `uvicorn api.main:app`. Swagger UI at /docs.

Thin routes over `clip_embedder`: the lifespan loads the detector (local weights or an MLflow
run), the embedders of the active spaces and their FAISS indexes once, checking each space's
identity against Postgres.
"""
from __future__ import annotations

import io
import logging
import mimetypes
import time
from contextlib import asynccontextmanager
from pathlib import Path

from clip_embedder import offline  # noqa: F401

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from PIL import Image

from api.deps import ServiceDep, SettingsDep
from api.schemas import (ErrorResponse, HealthResponse, ImageInfo, ImageSearchResponse, ObjectInfo, QueryObject,
                         SearchHit, TextSearchRequest, TextSearchResponse)
from clip_embedder.config import Settings, get_settings
from clip_embedder.embedders import SpaceMismatchError
from clip_embedder.images import ImageError, decode_image
from clip_embedder.search import Hit, QueryError, SearchService, load_detector
from clip_embedder.store import Store

log = logging.getLogger("api")
ERRORS = {c: {"model": ErrorResponse} for c in (404, 409, 413, 415, 422)}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app. `settings` defaults to the environment / `.env` (read at start-up)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        s = settings or get_settings()
        t0 = time.perf_counter()
        store = Store.open(s)
        try:
            detector = load_detector(s)
            app.state.service = SearchService.create(s, store, detector)
        except Exception as e:
            log.error("start-up failed: %s", e)  # one readable line above uvicorn's traceback
            store.close()
            raise
        app.state.settings = s
        log.info("search service ready in %.1fs", time.perf_counter() - t0)
        yield
        app.state.service = None
        store.close()

    app = FastAPI(title="Object-level visual search", version="0.1.0", lifespan=lifespan,
                  description="Image-to-image and text-to-image search over detected objects and whole images. "
                              "Results from several embedding spaces are fused with reciprocal rank fusion.")

    @app.middleware("http")
    async def _upload_cap(request: Request, call_next):
        # refuse an oversized upload from its Content-Length, before the multipart body is spooled to disk
        s = settings or get_settings()
        length = request.headers.get("content-length", "")
        if request.url.path == "/api/search_image" and length.isdigit() and \
                int(length) > s.max_upload_bytes + 64 * 1024:  # multipart framing allowance
            return JSONResponse({"detail": f"upload is {int(length):,} bytes; the limit is {s.max_upload_bytes:,} "
                                           "(MAX_UPLOAD_BYTES)"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(ImageError)
    async def _image_error(_: Request, e: ImageError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(QueryError)
    async def _query_error(_: Request, e: QueryError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    @app.exception_handler(SpaceMismatchError)
    async def _mismatch(_: Request, e: SpaceMismatchError):
        return JSONResponse({"detail": str(e)}, status_code=409)

    def hit_model(h: Hit, s: Settings) -> SearchHit:
        base = s.public_url.rstrip("/")
        return SearchHit(item_id=h.item_id, image_id=h.image_id, kind=h.kind, label=h.label,
                         detection_score=h.detection_score, bbox=h.bbox, image_width=h.image_size[0],
                         image_height=h.image_size[1], score=h.score, similarity=h.similarity,
                         spaces=h.spaces, image_url=f"{base}/api/images/{h.image_id}/file",
                         thumbnail_url=f"{base}/api/images/{h.image_id}/thumbnail",
                         crop_url=f"{base}/api/items/{h.item_id}/crop")

    @app.get("/", include_in_schema=False)
    def root():
        return RedirectResponse("/docs")

    @app.get("/api/health", response_model=HealthResponse, tags=["service"])
    def health(service: ServiceDep):
        """Spaces (model, weights, dim, vectors, FAISS state), row counts, the detector, refused spaces."""
        h = service.health()
        return HealthResponse(status="ok" if service.indexes else "degraded", labels=service.store.labels(), **h)

    @app.post("/api/reload", tags=["service"])
    def reload(service: ServiceDep) -> dict[str, str]:
        """Pick up vectors indexed since start-up: each stale FAISS index is rebuilt from Postgres."""
        return service.reload()

    @app.post("/api/search_image", response_model=ImageSearchResponse, responses=ERRORS, tags=["search"])
    def search_image(service: ServiceDep, settings: SettingsDep,
                     file: UploadFile = File(description="a JPEG, PNG, WebP, BMP or TIFF image"),
                     top_k: int = Query(10, ge=1, le=100, description="results per list"),
                     same_class: bool = Query(False, description="object neighbours only of the same class"),
                     spaces: list[str] | None = Query(None, description="restrict to these spaces")):
        """Find indexed images like this one: each detected object's nearest crops, and the whole image's
        nearest images."""
        ctype = (file.content_type or "").split(";")[0].strip().lower()
        if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
            raise HTTPException(415, f"content type {ctype!r} is not an image; upload a JPEG, PNG, WebP, BMP or TIFF")
        data = file.file.read(settings.max_upload_bytes + 1)
        image = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels,
                             name=f"upload {file.filename or ''}".strip())
        r = service.search_image(image, top_k=top_k, same_class=same_class, spaces=spaces)
        return ImageSearchResponse(
            width=r.width, height=r.height, spaces=r.spaces, warnings=r.warnings, timings_ms=r.timings_ms,
            image_neighbours=[hit_model(h, settings) for h in r.image_neighbours],
            objects=[QueryObject(label=o.detection.label, score=o.detection.score, bbox=o.detection.bbox,
                                 skipped=o.skipped, neighbours=[hit_model(h, settings) for h in o.neighbours])
                     for o in r.objects])

    def _text(service: SearchService, settings: Settings, req: TextSearchRequest) -> TextSearchResponse:
        t = time.perf_counter()
        hits, spaces_used, warnings = service.search_text(req.query, top_k=req.top_k, label=req.label,
                                                          spaces=req.spaces)
        return TextSearchResponse(query=req.query, results=[hit_model(h, settings) for h in hits], spaces=spaces_used,
                                  warnings=warnings, took_ms=round((time.perf_counter() - t) * 1000, 2))

    @app.get("/api/search_text", response_model=TextSearchResponse, responses=ERRORS, tags=["search"])
    def search_text(service: ServiceDep, settings: SettingsDep,
                    query: str = Query(..., min_length=1, max_length=1000, examples=["handbag"]),
                    top_k: int = Query(10, ge=1, le=100), label: str | None = Query(None),
                    spaces: list[str] | None = Query(None)):
        """Images matching a text query (CLIP's text tower where the clip space exists, plus the text space)."""
        return _text(service, settings, TextSearchRequest(query=query, top_k=top_k, label=label, spaces=spaces))

    @app.post("/api/search_text", response_model=TextSearchResponse, responses=ERRORS, tags=["search"])
    def search_text_post(service: ServiceDep, settings: SettingsDep, req: TextSearchRequest):
        """The same as GET, with a JSON body."""
        return _text(service, settings, req)

    def _image_row(service: SearchService, image_id: int) -> dict:
        im = service.store.get_image(image_id)
        if im is None:
            raise HTTPException(404, f"no image with id {image_id}")
        return im

    def _file(im: dict) -> Path:
        path = Path(im["path"])
        if not path.is_file():
            raise HTTPException(404, f"the file of image {im['id']} is no longer at {path}; re-index the collection")
        return path

    def _open(im: dict) -> Image.Image:
        with Image.open(_file(im)) as f:
            from PIL import ImageOps  # noqa: PLC0415

            return ImageOps.exif_transpose(f).convert("RGB")

    def _jpeg(img: Image.Image) -> Response:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=88)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/images/{image_id}", response_model=ImageInfo, responses=ERRORS, tags=["images"])
    def image_info(image_id: int, service: ServiceDep, settings: SettingsDep):
        """An indexed image: size, split, description and its detected objects."""
        im = _image_row(service, image_id)
        base = settings.public_url.rstrip("/")
        return ImageInfo(id=im["id"], sha256=im["sha256"], width=im["width"], height=im["height"], split=im["split"],
                         description=im["description"], image_url=f"{base}/api/images/{image_id}/file",
                         thumbnail_url=f"{base}/api/images/{image_id}/thumbnail",
                         objects=[ObjectInfo(item_id=o["id"], label=o["label"], score=o["score"],
                                             bbox=(o["x1"], o["y1"], o["x2"], o["y2"]),
                                             crop_url=f"{base}/api/items/{o['id']}/crop") for o in im["objects"]])

    @app.get("/api/images/{image_id}/file", responses=ERRORS, tags=["images"],
             response_class=FileResponse)
    def image_file(image_id: int, service: ServiceDep):
        """The original image file."""
        path = _file(_image_row(service, image_id))
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    @app.get("/api/images/{image_id}/thumbnail", responses=ERRORS, tags=["images"], response_class=Response)
    def image_thumbnail(image_id: int, service: ServiceDep, size: int = Query(256, ge=16, le=1024)):
        """A JPEG thumbnail whose longer side is `size` pixels."""
        img = _open(_image_row(service, image_id))
        img.thumbnail((size, size))
        return _jpeg(img)

    @app.get("/api/items/{item_id}/crop", responses=ERRORS, tags=["images"], response_class=Response)
    def item_crop(item_id: int, service: ServiceDep, size: int = Query(256, ge=16, le=1024)):
        """The padded crop of an indexed object (or the whole image for an image item), as JPEG."""
        row = service.store.get_items([item_id]).get(item_id)
        if row is None:
            raise HTTPException(404, f"no indexed item with id {item_id}")
        img = _open({"id": row["image_id"], "path": row["path"]})
        img = img.crop((row["crop_x1"], row["crop_y1"], row["crop_x2"], row["crop_y2"]))
        img.thumbnail((size, size))
        return _jpeg(img)

    return app


app = create_app()
