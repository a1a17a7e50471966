"""Images: add (upload → queue), describe, serve (file, thumbnail, crops), delete."""
from __future__ import annotations

import io
import os
import stat
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, Response
from PIL import Image, ImageOps

from api.deps import ImagesDep, ImageSlot, IngestDep, ItemsDep, SettingsDep, TasksDep, WriteKey
from api.routes.tasks import batch_model
from api.schemas import ERRORS, DeleteResponse, ImageInfo, ObjectInfo, OcrLineInfo, TaskBatch, tag_infos
from api.uploads import read_uploads
from clip_embedder.db.images import ImageRepository
from clip_embedder.db.records import ImageDetail, ImageRecord
from clip_embedder.images import file_sha256, sha256_bytes
from clip_embedder.intake.ingest import Ingest
from clip_embedder.intake.originals import FORMAT_SUFFIX, media_type

router = APIRouter(prefix="/api", tags=["images"])


def _image(images: ImageRepository, image_id: int) -> ImageDetail:
    detail = images.get(image_id)
    if detail is None:
        raise HTTPException(404, f"no image with id {image_id}")
    return detail


@lru_cache(maxsize=4096)
def _file_is_the_indexed_one(path: str, mtime_ns: int, size: int, sha256: str) -> bool:
    """Whether the file's bytes still hash to the indexed sha256 (cached while its mtime and size hold)."""
    return file_sha256(path) == sha256


def _bytes_or_path(im: ImageRecord, ingest: Ingest) -> bytes | Path:
    """The stored original's bytes, or the path of a file indexed where it lies — only while it is still the
    file that was indexed: a regular file, reached through no symlink, with the indexed sha256.

    Raises:
        HTTPException: 404 the file is gone or is not a plain file there any more; 410 it changed since it
            was indexed (messages name the image's file name, never a server path).
    """
    if im.storage == "originals":
        try:
            data = ingest.originals.get(im.path)
        except FileNotFoundError:
            raise HTTPException(410, f"the stored original of image {im.id} ({im.file_name}) is gone") from None
        if sha256_bytes(data) != im.sha256:
            raise HTTPException(410, f"the stored original of image {im.id} ({im.file_name}) is damaged")
        return data
    path = Path(im.path)
    gone = HTTPException(404, f"the file of image {im.id} ({im.file_name}) is no longer where it was indexed; "
                              "re-index the collection")
    try:
        st = os.lstat(path)
    except OSError:
        raise gone from None
    if not stat.S_ISREG(st.st_mode) or os.path.realpath(path) != str(path):  # a symlink or other file type there
        raise gone
    if not _file_is_the_indexed_one(str(path), st.st_mtime_ns, st.st_size, im.sha256):
        raise HTTPException(410, f"the file of image {im.id} ({im.file_name}) changed since it was indexed; "
                                 "re-index the collection")
    return path


def _open(im: ImageRecord, ingest: Ingest) -> Image.Image:
    src = _bytes_or_path(im, ingest)
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as f:
            return ImageOps.exif_transpose(f).convert("RGB")
    except (OSError, ValueError, SyntaxError) as e:  # replaced between the check and the read
        raise HTTPException(410, f"the file of image {im.id} ({im.file_name}) cannot be read as the indexed "
                                 f"image ({type(e).__name__})") from None


def _jpeg(img: Image.Image) -> Response:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


@router.post("/images", status_code=202, response_model=TaskBatch, responses=ERRORS,
             dependencies=[WriteKey, ImageSlot])
def add_images(ingest: IngestDep, settings: SettingsDep,
               files: Annotated[list[UploadFile], File(description="one or many JPEG, PNG, WebP, BMP or TIFF files")]):
    """Add photos to the index. Each file is checked (type, size, pixels, truncation) before anything is
    queued: one bad file refuses the request with that file's reason. New images are queued for the
    workers; a file already indexed comes back `succeeded` with its image id. Poll
    `GET /api/tasks?batch=…` until every task has succeeded or failed."""
    uploads = read_uploads(files, settings, "upload")
    batch, tasks = ingest.add_uploads(uploads)
    return batch_model(batch, tasks)


@router.get("/images/{image_id}", response_model=ImageInfo, responses=ERRORS)
def image_info(image_id: int, images: ImagesDep, tasks: TasksDep, settings: SettingsDep):
    """An indexed image: file name, size, split, description, its detected objects, and where the enrichments
    read after it became searchable (OCR) stand."""
    d = _image(images, image_id)
    im = d.image
    states = tasks.enrichment_states(image_id)
    base = settings.public_url.rstrip("/")
    return ImageInfo(id=im.id, sha256=im.sha256, file_name=im.file_name,
                     source="upload" if im.storage == "originals" else "folder", width=im.width,
                     height=im.height, split=im.split, description=im.description,
                     image_url=f"{base}/api/images/{image_id}/file",
                     thumbnail_url=f"{base}/api/images/{image_id}/thumbnail",
                     tags=tag_infos(d.tags.get(d.image_item_id or -1, [])),
                     ocr=[OcrLineInfo(text=ln.text, confidence=ln.confidence, bbox=ln.bbox) for ln in d.ocr],
                     objects=[ObjectInfo(item_id=o.id, label=o.label, score=o.score, bbox=o.bbox,
                                         crop_url=f"{base}/api/items/{o.id}/crop",
                                         tags=tag_infos(d.tags.get(o.id, []))) for o in d.objects],
                     enrichments=states)  # type: ignore[arg-type]


@router.get("/images/{image_id}/file", responses=ERRORS, response_class=Response)
def image_file(image_id: int, images: ImagesDep, ingest: IngestDep):
    """The original image file."""
    im = _image(images, image_id).image
    src = _bytes_or_path(im, ingest)
    if isinstance(src, bytes):
        return Response(src, media_type=media_type(im.path), headers={"Cache-Control": "max-age=86400"})
    with Image.open(src) as f:  # the media type of what the file is, not of its name
        fmt = f.format
    return FileResponse(src, media_type=media_type("x" + FORMAT_SUFFIX.get(fmt or "", "")))


@router.get("/images/{image_id}/thumbnail", responses=ERRORS, response_class=Response, dependencies=[ImageSlot])
def image_thumbnail(image_id: int, images: ImagesDep, ingest: IngestDep, size: int = Query(256, ge=16, le=1024)):
    """A JPEG thumbnail whose longer side is `size` pixels."""
    img = _open(_image(images, image_id).image, ingest)
    img.thumbnail((size, size))
    return _jpeg(img)


@router.delete("/images/{image_id}", response_model=DeleteResponse, responses=ERRORS, dependencies=[WriteKey])
def delete_image(image_id: int, ingest: IngestDep):
    """Remove an image, its objects and their vectors in every space (the running API's FAISS indexes
    follow within seconds) and its stored original when the service owns it (an upload)."""
    removed = ingest.delete_image(image_id)
    if removed is None:
        raise HTTPException(404, f"no image with id {image_id}")
    return DeleteResponse(image_id=image_id, items_removed=len(removed.item_ids),
                          original_deleted=bool(removed.originals))


@router.get("/items/{item_id}/crop", responses=ERRORS, response_class=Response, dependencies=[ImageSlot])
def item_crop(item_id: int, items: ItemsDep, ingest: IngestDep, size: int = Query(256, ge=16, le=1024)):
    """The padded crop of an indexed object (or the whole image for an image item), as JPEG."""
    row = items.get([item_id]).get(item_id)
    if row is None:
        raise HTTPException(404, f"no indexed item with id {item_id}")
    im = ImageRecord(id=row.image_id, sha256=row.sha256, path=row.path, storage=row.storage, file_name=row.file_name,
                     width=row.width, height=row.height, split=None, description="", detector_sha256=None,
                     created_at=None)  # type: ignore[arg-type]
    img = _open(im, ingest).crop(row.crop_box)
    img.thumbnail((size, size))
    return _jpeg(img)
