"""The typed records the repositories take and return: rows to write (`ImageRow`, `ItemRow`), rows read
(`ImageRecord`, `ItemRecord`, `ImageDetail`, `TaskRecord`, `LexicalHit`), and what a write changed (`Removed`,
`ImageMove`); the ledger's (`StoredReceipt`, `CorrectionRecord`, `LedgerRow`, `LedgerGroup`,
`Category`). Boxes are xyxy pixels of the original image."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import numpy as np

from clip_embedder.models.ocr import OcrLine
from clip_embedder.models.tagger import Tag
from clip_embedder.receipts.records import Receipt


# --- records written -----------------------------------------------------------------------------
@dataclass
class ItemRow:
    """An item to insert. bbox / crop are xyxy pixels; `vectors` maps space name → (dim,) float32."""

    kind: str
    label: str | None
    score: float | None
    bbox: tuple[float, float, float, float]
    crop: tuple[int, int, int, int]
    description: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    tags: list[Tag] = field(default_factory=list)
    keywords: str = ""         # words it is found by confidently (label, sure tags, OCR text)
    keywords_weak: str = ""    # words of its less sure tags (they rank; they do not make a hit confident)
    #: an existing item being re-enriched (new tags / description), None for a new one
    item_id: int | None = None
    #: its stored description (re-enrichment re-embeds the description spaces only when it changed)
    old_description: str | None = None

    @property
    def description_changed(self) -> bool:
        return self.item_id is None or self.description != self.old_description


class LexicalHit(NamedTuple):
    """One item matched by full-text search (`LexicalRepository.search`)."""

    item_id: int
    rank: float       # ts_rank_cd
    strong: bool      # a term matched its confident keywords (weight A: label, sure tags, OCR), not only weak tags
    image_id: int
    score: float | None  # its detection score (None for a whole image)


class ImageMove(NamedTuple):
    """`ImageRepository.repoint`: record the image with this sha256 under `path` instead of one of `replaceable`."""

    sha256: str
    path: str
    file_name: str
    storage: str
    replaceable: list[str]


@dataclass
class ImageRow:
    """An image to insert, with its items.

    `path` is an absolute file path (`storage='file'`) or a key under STORAGE_ROOT (`storage='originals'`);
    `file_name` is what people see (never an absolute server path).
    """

    sha256: str
    path: str
    width: int
    height: int
    split: str | None
    description: str
    detector_sha256: str | None
    items: list[ItemRow] = field(default_factory=list)
    #: an existing image whose items are replaced (re-detected with another detector)
    replace_id: int | None = None
    file_name: str = ""
    storage: str = "file"
    ocr: list[OcrLine] = field(default_factory=list)
    ocr_engine: str = ""
    #: the tagger/OCR configuration the tags, OCR text and descriptions were built with
    enrichment: str | None = None
    #: an existing image whose tags, OCR and descriptions are rebuilt (its items and detections stay)
    update_id: int | None = None

    @property
    def ocr_text(self) -> str:
        return "\n".join(line.text for line in self.ocr)


# --- records read ---------------------------------------------------------------------------------
@dataclass
class ImageRecord:
    """A stored image (one row of `images`)."""

    id: int
    sha256: str
    path: str
    storage: str
    file_name: str
    width: int
    height: int
    split: str | None
    description: str
    detector_sha256: str | None
    created_at: datetime
    ocr_text: str = ""
    enrichment: str | None = None


@dataclass
class ItemRecord:
    """A stored item joined with its image's size and location. bbox and crop box: xyxy pixels."""

    id: int
    image_id: int
    kind: str
    label: str | None
    score: float | None
    x1: float
    y1: float
    x2: float
    y2: float
    crop_x1: int
    crop_y1: int
    crop_x2: int
    crop_y2: int
    description: str
    keywords: str = ""
    width: int = 0
    height: int = 0
    path: str = ""
    storage: str = "file"
    file_name: str = ""
    sha256: str = ""

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        return (self.crop_x1, self.crop_y1, self.crop_x2, self.crop_y2)



@dataclass
class ImageDetail:
    """An image with its object items (best detection first) and the id of its whole-image item."""

    image: ImageRecord
    objects: list[ItemRecord]
    image_item_id: int | None
    tags: dict[int, list[Tag]] = field(default_factory=dict)  # item id → its tags, best first
    ocr: list[OcrLine] = field(default_factory=list)


@dataclass
class TaskRecord:
    """An ingest task: one uploaded or scanned file. `status`: queued | running | succeeded | failed."""

    id: str
    batch: str
    sha256: str
    file_name: str
    status: str
    attempts: int
    error: str | None
    image_id: int | None
    job_id: int | None
    created_at: datetime
    updated_at: datetime
    #: where the text read in the image stands (queued | running | done | failed | not run); None before it is written
    ocr: str | None = None
    #: where its analysis stands (queued | running | done | failed); None when none was asked for
    analysis: str | None = None
    #: what the file becomes: 'image' (searchable) or 'receipt' (a ledger entry)
    kind: str = "image"
    #: the ledger's receipt once a receipt photo is read
    receipt_id: int | None = None


@dataclass
class Removed:
    """What a delete or replacement removed: image ids, item ids, and the original to delete (if any)."""

    image_ids: list[int] = field(default_factory=list)
    item_ids: list[int] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)



# --- the ledger ----------------------------------------------------------------------------------
@dataclass
class StoredReceipt:
    """A receipt in the ledger: `receipt` holds its current values (corrections applied), `extracted` the extractor's
    answer as it was; `category_source` 'rule' (filed by the category rules) or 'user'."""

    id: int
    sha256: str
    file_name: str
    original: str
    width: int
    height: int
    category: str | None
    category_source: str
    duplicate_of: int | None
    extractor_version: str | None
    receipt: Receipt
    extracted: Receipt
    corrected: bool
    created_at: datetime
    updated_at: datetime


@dataclass
class CorrectionRecord:
    """One user correction of one field: the extractor's value, the value before and after (JSON values)."""

    field: str
    extracted: Any
    before: Any
    after: Any
    corrected_at: datetime


@dataclass
class LedgerRow:
    """One receipt as the ledger lists it (amounts in `currency`)."""

    id: int
    date: date | None
    time: str | None
    merchant: str | None
    category: str | None
    total: float | None
    tax: float | None
    currency: str | None
    payment_method: str | None
    needs_review: bool
    duplicate_of: int | None
    file_name: str


@dataclass
class LedgerGroup:
    """One group of the ledger (a day, a month YYYY-MM, a merchant or a category) in one currency."""

    key: str | None
    currency: str | None
    receipts: int
    total: float


@dataclass
class Category:
    """A ledger category: a receipt whose merchant or items hold its keywords is filed under it."""

    name: str
    keywords: list[str]
    position: int = 100


#: Per-vector metadata of a space, one entry per vector in id order (`VectorRepository.item_meta`): "ids" int64 (n,)
#: item ids; "kind" object (n,) 'image' or 'object'; "label" object (n,) detected label ('' for whole images);
#: "image_id" int64 (n,) the item's image; "score" float32 (n,) detection score (NaN for whole images).
ItemMeta = dict[str, np.ndarray]
