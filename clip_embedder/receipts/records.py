"""The receipt schema: what an extractor returns for one receipt, whichever it is (rules, learned, a provider)."""
from __future__ import annotations

from pydantic import BaseModel, Field

from clip_embedder.analysis.records import BBOX_DOC, BBox

FIELDS = ("merchant", "address", "date", "total")


class ReceiptLine(BaseModel):
    """One text line of the receipt with its box (xyxy pixels of the receipt image) and, once extracted, the field
    it was read as (None: none)."""

    text: str
    bbox_xyxy: BBox | None = Field(None, description=BBOX_DOC)
    field: str | None = None


class ReceiptItem(BaseModel):
    """One bought item: its name, quantity, unit price and amount (amounts in the receipt's currency)."""

    name: str
    quantity: float | None = None
    unit_price: float | None = None
    amount: float | None = None


class Receipt(BaseModel):
    """A receipt's fields. `date` is ISO 8601 (YYYY-MM-DD), `time` HH:MM[:SS]; amounts are numbers in `currency`
    (ISO 4217); `confidence` per field 0..1; `needs_review` with its reasons when a check failed."""

    merchant: str | None = None
    address: str | None = None
    date: str | None = None
    time: str | None = None
    items: list[ReceiptItem] = Field(default_factory=list)
    subtotal: float | None = None
    tax: float | None = None
    total: float | None = None
    currency: str | None = None
    payment_method: str | None = None
    lines: list[ReceiptLine] = Field(default_factory=list)
    confidence: dict[str, float] = Field(default_factory=dict)
    needs_review: bool = False
    review_reasons: list[str] = Field(default_factory=list)
    extractor: str = ""
