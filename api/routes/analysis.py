"""Analysis: what a photo holds (a description, a sensitive-content verdict with reasons, labels with boxes)."""
from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, Security, UploadFile
from fastapi.responses import JSONResponse

from api.deps import AnalysesDep, ImageSlot, SettingsDep, api_key_header, check_key, get_analyser, get_app_settings
from api.schemas import ERRORS
from api.uploads import read_upload
from clip_embedder.analysis.providers.base import ProviderError
from clip_embedder.analysis.records import Analysis, parse_tasks
from clip_embedder.images import decode_image

log = logging.getLogger("api")
router = APIRouter(prefix="/api", tags=["analysis"])
PROMPT_MAX_CHARS = 2000


def require_key_for_hosted(request: Request, key: str | None = Security(api_key_header)) -> None:
    """With a hosted provider (ANALYSIS_PROVIDER=openai|bedrock) every analysis spends the provider's tokens: a valid
    X-API-Key is needed (401 / 403). The local provider needs none (unless REQUIRE_KEY_FOR_READS)."""
    settings = get_app_settings(request)
    if settings.analysis_provider != "local":
        check_key(settings, key)


@router.post("/analyze", response_model=Analysis, dependencies=[Depends(require_key_for_hosted), ImageSlot],
             responses={**ERRORS, 502: ERRORS[503], 504: ERRORS[503]})
def analyze(request: Request, settings: SettingsDep,
            file: UploadFile = File(description="a JPEG, PNG, WebP, BMP or TIFF image"),
            tasks: str | None = Query(None, max_length=100, examples=["describe,sensitive,labels"],
                                      description="any of describe, sensitive, labels (comma separated); empty = all"),
            prompt: str | None = Form(None, max_length=PROMPT_MAX_CHARS,
                                      description="hosted providers: an extra instruction added to each task's "
                                                  "prompt (the local models ignore it)")):
    """Analyse a photo: a description, a sensitive-content verdict with its reasons (identifiable faces, personal
    data in the text read, nudity), labels with `bbox_xyxy` boxes in the photo's pixels, and the text read.

    ANALYSIS_PROVIDER decides who answers: `local` (this service's models, offline) or a hosted vision-language model
    (`openai`, `bedrock`; then an X-API-Key is required). 502 when the provider failed or answered invalid JSON twice,
    503 when it rate-limited past the retries, 504 when it timed out."""
    try:
        wanted = parse_tasks(tasks)
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    data = read_upload(file, settings)
    image = decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels,
                         name=f"upload {file.filename or ''}".strip())
    analyser = get_analyser(request)
    try:
        result = analyser.analyse(image, wanted, prompt=prompt)
        if prompt and settings.analysis_provider == "local":
            result.warnings.append("the local models ignore `prompt` (it is for hosted providers)")
        return result
    except ProviderError as e:
        headers = {"Retry-After": str(round(e.retry_after))} if e.retry_after else None
        raise HTTPException(e.status, str(e), headers=headers) from None
    except (FileNotFoundError, RuntimeError) as e:  # a model file or package missing: the message says what to do
        log.error("analysis unavailable: %s", e)
        raise HTTPException(503, f"analysis is unavailable: {e}") from None


@router.get("/images/{image_id}/analysis", response_model=Analysis, responses=ERRORS)
def stored_analysis(image_id: int, analyses: AnalysesDep):
    """The stored analysis of an indexed image (written by the analysis job with ANALYZE=true, or by
    `embed_and_index --analyze`); the `X-Analysis-Signature` header names the analyser that wrote it, and
    `Last-Modified` when. 404 when the image is unknown or not analysed yet."""
    got = analyses.get(image_id)
    if got is None:
        raise HTTPException(404, f"image {image_id} has no stored analysis: it is not indexed, or not analysed yet "
                                 "(ANALYZE=true analyses every indexed image; POST /api/analyze analyses any photo)")
    return JSONResponse(got.analysis.model_dump(mode="json"), headers={
        "X-Analysis-Signature": got.signature,
        "Last-Modified": got.analysed_at.strftime("%a, %d %b %Y %H:%M:%S GMT")})
