"""Request and response models of the receipts and the ledger (`api.routes.receipts`, `api.routes.ledger`)."""
from __future__ import annotations

import datetime as dt
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clip_embedder.db.records import LedgerGroup, LedgerRow
from clip_embedder.receipts.records import Receipt, ReceiptItem

#: the largest amount the ledger stores (its columns are NUMERIC(14, 2))
AMOUNT_MAX = 1e11
#: a query parameter's pattern: no NUL character (PostgreSQL's text cannot hold one)
NO_NUL = r"^[^\x00]*$"


def _refuse_nul(value: Any) -> Any:
    """`value` unchanged, after checking that no string in it (nested lists and objects too) holds a NUL character.

    Raises:
        ValueError: one does (pydantic answers 422).
    """
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("text cannot contain a NUL character")
    if isinstance(value, dict):
        for v in value.values():
            _refuse_nul(v)
    elif isinstance(value, list):
        for v in value:
            _refuse_nul(v)
    return value


class NoNul(BaseModel):
    """A request body whose text may not hold NUL characters."""

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return _refuse_nul(data)


GROUP_BY_DOC = "sum per day, month (YYYY-MM), merchant or category — per currency, never across currencies"


class CorrectionPublic(BaseModel):
    """One user correction: the extractor's value kept beside the value before and after."""

    field: str
    extracted: Any = Field(description="what the extractor read")
    before: Any
    after: Any
    corrected_at: dt.datetime


class ReceiptPublic(BaseModel):
    """A receipt in the ledger: its current fields (corrections applied; `fields.lines` are the text lines read, with
    boxes in the photo's pixels and the field each was read as), what the extractor read, and the audit."""

    id: int
    file_name: str
    sha256: str
    image_url: str = Field(description="the receipt photo")
    width: int
    height: int
    category: str | None
    category_source: Literal["rule", "user"]
    needs_review: bool
    review_reasons: list[str]
    duplicate_of: int | None = Field(description="an earlier receipt with the same merchant, date and total")
    extractor: str
    extractor_version: str | None
    fields: Receipt
    extracted: dict[str, Any] = Field(description="the extractor's values of the fields a user may correct")
    corrections: list[CorrectionPublic]
    created_at: dt.datetime
    updated_at: dt.datetime


class ReceiptCorrection(NoNul):
    """Corrections of a receipt: send only the fields to change (`null` clears one). `items` replaces the whole list;
    `category` files the receipt by hand (the category rules then leave it alone)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"total": 9.0, "date": "2018-12-25"}, {"merchant": "MR D.I.Y. (M) SDN BHD", "category": "household"}]})

    merchant: str | None = Field(None, max_length=500)
    address: str | None = Field(None, max_length=1000)
    date: dt.date | None = None
    time: str | None = Field(None, pattern=r"^\d{2}:\d{2}(:\d{2})?$")
    items: list[ReceiptItem] | None = Field(None, max_length=500)
    subtotal: float | None = Field(None, ge=-AMOUNT_MAX, le=AMOUNT_MAX)
    tax: float | None = Field(None, ge=-AMOUNT_MAX, le=AMOUNT_MAX)
    total: float | None = Field(None, ge=-AMOUNT_MAX, le=AMOUNT_MAX)
    currency: str | None = Field(None, pattern=r"^[A-Za-z]{3}$", description="ISO 4217, e.g. MYR, KRW, EUR")
    payment_method: str | None = Field(None, max_length=100)
    category: str | None = Field(None, min_length=1, max_length=100)

    @field_validator("currency")
    @classmethod
    def _upper(cls, v: str | None) -> str | None:
        return v.upper() if v else v

    @field_validator("items")
    @classmethod
    def _amounts_in_range(cls, v: list[ReceiptItem] | None) -> list[ReceiptItem] | None:
        for it in v or []:
            for name in ("quantity", "unit_price", "amount"):
                x = getattr(it, name)
                if x is not None and not (math.isfinite(x) and abs(x) <= AMOUNT_MAX):
                    raise ValueError(f"an item's {name} must be a finite number within ±{AMOUNT_MAX:g}")
        return v

    def changes(self) -> dict[str, Any]:
        """The fields sent, as the ledger takes them (dates ISO 8601)."""
        out = self.model_dump(include=self.model_fields_set)
        if isinstance(out.get("date"), dt.date):
            out["date"] = out["date"].isoformat()
        return out


class ReceiptDeleted(BaseModel):
    """What a receipt delete removed."""

    receipt_id: int
    original_deleted: bool = Field(description="the stored photo too (kept when an indexed image has the same bytes)")


class LedgerAnswer(BaseModel):
    """The receipts a ledger query covers (newest first), their totals per currency and, with `group_by`, per
    group."""

    receipts: list[LedgerRow]
    totals: list[LedgerGroup] = Field(description="per currency (`key` null)")
    group_by: Literal["day", "month", "merchant", "category"] | None = None
    groups: list[LedgerGroup] = Field(default_factory=list)


class CategoryRule(NoNul):
    """A category's rule: a receipt whose merchant or item names hold one of its keywords (case-insensitive, at the
    start of a word; keywords of six letters or more and Hangul ones anywhere) is filed under it; rules are tried in
    `position` order."""

    keywords: list[str] = Field(max_length=500)
    position: int = Field(100, ge=0, le=10_000)


class CategoryPublic(CategoryRule):
    name: str


class CategoriesAnswer(BaseModel):
    """The category rules and, after a change, how many receipts the rules filed again."""

    categories: list[CategoryPublic]
    refiled: int | None = None
