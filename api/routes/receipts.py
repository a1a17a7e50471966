"""Receipts: upload receipt photos (read by the workers into the ledger), look one up, correct it, delete it."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, HTTPException, UploadFile
from fastapi.responses import Response

from api.deps import ImageSlot, IngestDep, ReceiptsDep, SettingsDep, StoreDep, WriteKey
from api.ledger_schemas import CorrectionPublic, ReceiptCorrection, ReceiptDeleted, ReceiptPublic
from api.routes.tasks import batch_model
from api.schemas import ERRORS, TaskBatch
from api.uploads import read_uploads
from clip_embedder.db.receipts import SCALAR_FIELDS
from clip_embedder.db.records import StoredReceipt
from clip_embedder.intake.originals import media_type
from clip_embedder.receipts.ledger import correct_receipt

router = APIRouter(prefix="/api", tags=["receipts"])


def receipt_model(r: StoredReceipt, corrections: list, base_url: str) -> ReceiptPublic:
    extracted = r.extracted.model_dump(mode="json", include={*SCALAR_FIELDS, "items"})
    return ReceiptPublic(
        id=r.id, file_name=r.file_name, sha256=r.sha256, image_url=f"{base_url.rstrip('/')}/api/receipts/{r.id}/file",
        width=r.width, height=r.height, category=r.category, category_source=r.category_source,  # type: ignore[arg-type]
        needs_review=r.receipt.needs_review, review_reasons=r.receipt.review_reasons, duplicate_of=r.duplicate_of,
        extractor=r.extracted.extractor, extractor_version=r.extractor_version, fields=r.receipt, extracted=extracted,
        corrections=[CorrectionPublic(**vars(c)) for c in corrections], created_at=r.created_at,
        updated_at=r.updated_at)


def _receipt(receipts, receipt_id: int) -> StoredReceipt:
    found = receipts.get(receipt_id)
    if found is None:
        raise HTTPException(404, f"no receipt with id {receipt_id}")
    return found


@router.post("/receipts", status_code=202, response_model=TaskBatch, responses=ERRORS,
             dependencies=[WriteKey, ImageSlot])
def add_receipts(ingest: IngestDep, settings: SettingsDep,
                 files: Annotated[list[UploadFile], File(description="one or many receipt photos (JPEG, PNG, WebP, "
                                                                     "BMP, TIFF)")]):
    """Add receipt photos to the household ledger. Each file is checked as a photo upload is (type, size, pixels,
    truncation) before anything is queued; the workers read each new photo (OCR, then the RECEIPT_EXTRACTOR
    extractor), file it under a category and check it. The same photo twice is one receipt. Poll
    `GET /api/tasks?batch=…`: a task's `receipt_id` is set once its receipt is in the ledger."""
    uploads = read_uploads(files, settings, "receipt")
    batch, tasks = ingest.add_receipts(uploads)
    return batch_model(batch, tasks)


@router.get("/receipts/{receipt_id}", response_model=ReceiptPublic, responses=ERRORS)
def get_receipt(receipt_id: int, store: StoreDep, settings: SettingsDep):
    """A receipt: its fields as they stand (with the text lines read and the field each line was read as), the
    extractor's values, its category, review flags and the corrections made to it."""
    r = _receipt(store.receipts, receipt_id)
    return receipt_model(r, store.receipts.corrections(receipt_id), settings.public_url)


@router.get("/receipts/{receipt_id}/file", responses=ERRORS, response_class=Response)
def receipt_file(receipt_id: int, receipts: ReceiptsDep, ingest: IngestDep):
    """The receipt photo as uploaded."""
    r = _receipt(receipts, receipt_id)
    try:
        data = ingest.originals.get(r.original)
    except FileNotFoundError:
        raise HTTPException(410, f"the stored photo of receipt {receipt_id} ({r.file_name}) is gone") from None
    return Response(data, media_type=media_type(r.original), headers={"Cache-Control": "max-age=86400"})


@router.patch("/receipts/{receipt_id}", response_model=ReceiptPublic, responses=ERRORS, dependencies=[WriteKey])
def correct(receipt_id: int, body: ReceiptCorrection, store: StoreDep, settings: SettingsDep):
    """Correct a receipt's fields. Each change is kept in the audit beside the extractor's value (`corrections`:
    the next training data); the receipt is checked again (items against the total, tax, date, currency, a
    possible duplicate) and filed again by the category rules unless `category` is set by hand."""
    if not body.model_fields_set:
        raise HTTPException(422, "nothing to correct: send the fields to change, e.g. {\"total\": 9.0}")
    try:
        r = correct_receipt(store, receipt_id, body.changes())
    except ValueError as e:
        raise HTTPException(422, str(e)) from None
    if r is None:
        raise HTTPException(404, f"no receipt with id {receipt_id}")
    return receipt_model(r, store.receipts.corrections(receipt_id), settings.public_url)


@router.delete("/receipts/{receipt_id}", response_model=ReceiptDeleted, responses=ERRORS, dependencies=[WriteKey])
def delete_receipt(receipt_id: int, ingest: IngestDep):
    """Remove a receipt from the ledger with its items and corrections, and its stored photo (unless an indexed
    image has the same bytes)."""
    deleted = ingest.delete_receipt(receipt_id)
    if deleted is None:
        raise HTTPException(404, f"no receipt with id {receipt_id}")
    return ReceiptDeleted(receipt_id=receipt_id, original_deleted=deleted)
