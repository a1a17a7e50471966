"""The checks every uploaded file gets, before it is searched or queued (one place, one set of messages)."""
from __future__ import annotations

from fastapi import HTTPException, UploadFile

from clip_embedder.config import Settings
from clip_embedder.intake.ingest import Upload, validate_upload


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


def read_uploads(files: list[UploadFile], settings: Settings, default_name: str) -> list[Upload]:
    """Every file of a multi-file upload read and checked (`read_upload`, `validate_upload`) before anything is kept:
    one bad file refuses the request with that file's reason.

    Raises:
        HTTPException: 413 more than MAX_FILES_PER_UPLOAD files; 415 / 413 / 422 a file that is not a usable image.
    """
    if len(files) > settings.max_files_per_upload:
        raise HTTPException(413, f"{len(files)} files in one request; the limit is {settings.max_files_per_upload} "
                                 "(MAX_FILES_PER_UPLOAD)")
    return [validate_upload(read_upload(f, settings), f.filename or default_name, settings) for f in files]
