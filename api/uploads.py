"""The checks every uploaded file gets, before it is searched or queued (one place, one set of messages)."""
from __future__ import annotations

from fastapi import HTTPException, UploadFile

from clip_embedder.config import Settings


def read_upload(file: UploadFile, settings: Settings) -> bytes:
    """The bytes of an uploaded file, refused early when its declared type is not an image.

    Reads at most MAX_UPLOAD_BYTES + 1 bytes, so `decode_image` can refuse an oversize file (413).

    Raises:
        HTTPException: 415 for a declared content type that is not an image.
    """
    ctype = (file.content_type or "").split(";")[0].strip().lower()
    if ctype and not (ctype.startswith("image/") or ctype == "application/octet-stream"):
        raise HTTPException(415, f"content type {ctype!r} of {file.filename or 'the upload'} is not an image; "
                                 "upload a JPEG, PNG, WebP, BMP or TIFF")
    return file.file.read(settings.max_upload_bytes + 1)
