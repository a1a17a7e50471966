"""Search: image → similar objects and images; text → matching images."""
from __future__ import annotations

import time
from typing import Literal

from fastapi import APIRouter, File, Query, Request, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import ImageSlot, ServiceDep, SettingsDep, get_app_settings, get_service, slot
from api.schemas import (
    ERRORS,
    ImageSearchResponse,
    QueryObject,
    SearchHit,
    TextSearchRequest,
    TextSearchResponse,
    tag_infos,
)
from api.uploads import read_upload
from clip_embedder.config import Settings
from clip_embedder.images import decode_image
from clip_embedder.search.filters import ContentFilter
from clip_embedder.search.records import Hit

router = APIRouter(prefix="/api", tags=["search"])
SensitiveFilter = Literal["exclude", "only"] | None
SENSITIVE_DOC = ("content filter from the stored analyses (ANALYZE=true): exclude = only images analysed as not "
                 "sensitive, only = only sensitive ones; images not analysed yet pass neither")


def hit_model(h: Hit, s: Settings) -> SearchHit:
    """The response model of one hit, with links under PUBLIC_URL."""
    base = s.public_url.rstrip("/")
    return SearchHit(item_id=h.item_id, image_id=h.image_id, kind=h.kind, label=h.label,
                     detection_score=h.detection_score, bbox=h.bbox, image_width=h.image_size[0],
                     image_height=h.image_size[1], score=h.score, similarity=h.similarity, spaces=h.spaces,
                     file_name=h.file_name, image_url=f"{base}/api/images/{h.image_id}/file",
                     thumbnail_url=f"{base}/api/images/{h.image_id}/thumbnail",
                     crop_url=f"{base}/api/items/{h.item_id}/crop",
                     tags=tag_infos(h.tags), weak=h.weak)


@router.post("/search_image", response_model=ImageSearchResponse, responses=ERRORS, dependencies=[ImageSlot])
def search_image(service: ServiceDep, settings: SettingsDep,
                 file: UploadFile = File(description="a JPEG, PNG, WebP, BMP or TIFF image"),
                 top_k: int = Query(10, ge=1, le=100, description="results per list"),
                 same_class: bool = Query(False, description="object neighbours only of the same class"),
                 spaces: list[str] | None = Query(None, max_length=8, description="restrict to these spaces"),
                 sensitive: SensitiveFilter = Query(None, description=SENSITIVE_DOC),
                 faces: bool = Query(False, description="only images whose stored analysis found a face")):
    """Find indexed images like this one: each detected object's nearest crops, and the whole image's
    nearest images."""
    data = read_upload(file, settings)
    image = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels,
                         name=f"upload {file.filename or ''}".strip())
    r = service.search_image(image, top_k=top_k, same_class=same_class, spaces=spaces,
                             content=ContentFilter(sensitive, faces))
    return ImageSearchResponse(
        width=r.width, height=r.height, spaces=r.spaces, warnings=r.warnings, timings_ms=r.timings_ms,
        image_neighbours=[hit_model(h, settings) for h in r.image_neighbours],
        objects=[QueryObject(label=o.detection.label, score=o.detection.score, bbox=o.detection.bbox,
                             skipped=o.skipped, neighbours=[hit_model(h, settings) for h in o.neighbours])
                 for o in r.objects])


async def _text(request: Request, req: TextSearchRequest) -> Response:
    # lean on purpose (the hottest route): no dependencies to solve, the slot taken here, and the response model
    # dumped once in the worker thread instead of validated again and serialised on the event loop (1.2x requests/s
    # at 1M items). The router's own dependencies (the read key with REQUIRE_KEY_FOR_READS) still apply; anything
    # else this route needs is called here, not declared with Depends
    service, settings = get_service(request), get_app_settings(request)

    def run() -> bytes:
        t = time.perf_counter()
        r = service.search_text(req.query, top_k=req.top_k, label=req.label, spaces=req.spaces,
                                include_weak=req.include_weak, content=ContentFilter(req.sensitive, req.faces))
        return TextSearchResponse(query=req.query, results=[hit_model(h, settings) for h in r.hits],
                                  spaces=r.spaces, warnings=r.warnings, hidden_weak=r.hidden_weak,
                                  took_ms=round((time.perf_counter() - t) * 1000, 2)).model_dump_json().encode()

    async with slot(request, "text"):
        body = await run_in_threadpool(run)
    return Response(body, media_type="application/json")


@router.get("/search_text", response_model=TextSearchResponse, responses=ERRORS)
async def search_text(request: Request,
                      query: str = Query(..., min_length=1, max_length=1000, examples=["handbag"]),
                      top_k: int = Query(10, ge=1, le=100), label: str | None = Query(None, max_length=200),
                      spaces: list[str] | None = Query(None, max_length=8, description="restrict to these spaces"),
                      include_weak: bool = Query(False, description="also return hits below the relevance floors"),
                      sensitive: SensitiveFilter = Query(None, description=SENSITIVE_DOC),
                      faces: bool = Query(False, description="only images whose stored analysis found a face")):
    """Images matching a text query: CLIP's text tower where the clip space exists, the text space over
    descriptions, and lexical matching of labels, ImageNet tags (with synonyms) and text read in the photos
    (a phrase in double quotes must appear in the photo's text), fused with RRF. Nothing confident → empty
    results and a warning."""
    return await _text(request, TextSearchRequest(query=query, top_k=top_k, label=label, spaces=spaces,
                                                  include_weak=include_weak, sensitive=sensitive, faces=faces))


@router.post("/search_text", response_model=TextSearchResponse, responses=ERRORS)
async def search_text_post(request: Request, req: TextSearchRequest):
    """The same as GET, with a JSON body."""
    return await _text(request, req)
