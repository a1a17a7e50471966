"""The household ledger's rules: a receipt photo read (OCR → extractor), filed under a category, flagged when it may
duplicate another, written; a user's correction applied and checked again; categories re-applied when their rules
change. Used by the worker's receipt job, the CLI (`extract_receipt --ingest`) and the API's routes."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from PIL import Image

from clip_embedder.db.records import Category, StoredReceipt
from clip_embedder.db.store import Store
from clip_embedder.receipts.records import Receipt
from clip_embedder.receipts.rules import check

log = logging.getLogger(__name__)
FALLBACK_CATEGORY = "other"
#: receipts narrower than this are enlarged before Tesseract reads them: on 12 rendered Korean receipts 560 px wide,
#: 1.5x read 합계 and "CU" right where 1x read 합겨 (5 of 12) and "(4" (benchmarks/bench_receipts.py --korean)
TESSERACT_MIN_WIDTH = 840
#: the review reason a possible duplicate gets (its receipt id follows)
DUPLICATE_REASON = "possibly the same purchase as receipt"


#: a Latin keyword this long matches inside a word too (OCR glues words: "GerbangAlafRestaurantsSdnBhd")
LONG_KEYWORD = 6


def _has_word(text: str, word: str) -> bool:
    """Whether `word` starts a word of `text` (upper-cased; "BOOK" is in "BOOKS" and in OCR's glued "BOOKTA.K", not
    in "EBOOK"); a keyword of LONG_KEYWORD letters or more, or one in Hangul (Korean runs words together: 이마트 holds
    마트), anywhere."""
    if not word:
        return False
    if re.search(r"[\uac00-\ud7a3]", word) or len(word) >= LONG_KEYWORD:
        return word.upper() in text
    return re.search(rf"(?<![A-Z0-9]){re.escape(word.upper())}", text) is not None


def categorise(merchant: str | None, item_names: list[str], categories: list[Category]) -> str:
    """The category a receipt is filed under: the one whose keywords its merchant (each hit counts 2) and item names
    (1 each) hold most; ties go to the earlier rule (`position`); no hit: "other"."""
    merchant_text = (merchant or "").upper()
    items_text = [n.upper() for n in item_names]
    best, best_score = FALLBACK_CATEGORY, 0
    for cat in sorted(categories, key=lambda c: (c.position, c.name)):
        score = sum(2 * _has_word(merchant_text, k) + sum(_has_word(t, k) for t in items_text) for k in cat.keywords)
        if score > best_score:
            best, best_score = cat.name, score
    return best


@dataclass
class Reader:
    """What turns a receipt photo into fields: an OCR engine (`models.ocr`) and an extractor (`receipts.registry
    .create_extractor`: rules, the learned champion, or a hosted provider)."""

    ocr: Any
    extractor: Any

    @classmethod
    def from_settings(cls, settings: Any) -> Reader:
        """As configured: RECEIPT_LANGS (eng: RapidOCR; Tesseract codes such as kor+eng: Tesseract reading one column,
        `--psm 4`, a receipt narrower than TESSERACT_MIN_WIDTH enlarged first), OCR_MIN_CONFIDENCE, RECEIPT_EXTRACTOR
        (`registry.create_extractor`).

        Raises:
            RuntimeError: the extractor cannot be built (RECEIPT_EXTRACTOR=learned without a champion, say).
        """
        from clip_embedder.models.ocr import RapidOcrEngine, TesseractEngine  # noqa: PLC0415
        from clip_embedder.receipts.registry import create_extractor  # noqa: PLC0415

        langs = settings.receipt_langs
        ocr = RapidOcrEngine(settings.ocr_min_confidence) if langs == "eng" else \
            TesseractEngine(langs, min(settings.ocr_min_confidence, 0.3), psm=4, min_width=TESSERACT_MIN_WIDTH)
        return cls(ocr, create_extractor(settings))

    @property
    def version(self) -> str | None:
        return str(getattr(self.extractor, "version", "") or "") or None

    def read(self, image: Image.Image, *, today: date | None = None) -> Receipt:
        """The receipt in an RGB photo: its text lines read, then its fields extracted and checked."""
        extract = getattr(self.extractor, "extract_image", None)
        if extract is not None:  # a hosted vision-language model reads the photo itself
            return extract(image, today=today)
        return self.extractor.extract(self.ocr.read(image), today=today)


def _flag_duplicate(store: Store, receipt_id: int, receipt: Receipt) -> int | None:
    """Flag a receipt that has the merchant, date and total of an earlier one (needs review); returns that one's id."""
    same = store.receipts.find_same(receipt.merchant, receipt.date, receipt.total, exclude=receipt_id)
    reasons = [r for r in receipt.review_reasons if not r.startswith(DUPLICATE_REASON)]
    if same is not None:
        reasons.append(f"{DUPLICATE_REASON} {same} (same merchant, date and total)")
    store.receipts.set_review(receipt_id, duplicate_of=same, needs_review=bool(reasons), reasons=reasons)
    return same


def file_receipt(store: Store, receipt: Receipt, *, sha256: str, original: str, file_name: str,
                 size: tuple[int, int], extractor_version: str | None) -> tuple[int, bool]:
    """Write an extracted receipt to the ledger: filed under its category, flagged when it may duplicate another.
    The same photo twice is one receipt.

    Returns:
        (receipt id, whether it is new).
    """
    category = categorise(receipt.merchant, [it.name for it in receipt.items], store.ledger.categories())
    receipt_id, new = store.receipts.add(sha256=sha256, original=original, file_name=file_name, size=size,
                                         receipt=receipt, extractor_version=extractor_version, category=category)
    if new:
        _flag_duplicate(store, receipt_id, receipt)
    return receipt_id, new


#: the fields a correction may set (besides "category")
CORRECTABLE = ("merchant", "address", "date", "time", "items", "subtotal", "tax", "total", "currency",
               "payment_method")


def correct_receipt(store: Store, receipt_id: int, changes: dict[str, Any], *,
                    today: date | None = None) -> StoredReceipt | None:
    """Apply a user's corrections (`changes`: field → new value, fields of `CORRECTABLE` and "category"), check the
    receipt again (`rules.check`; duplicates too) and keep each change in the audit beside the extractor's value.
    A category set by hand stays; otherwise the rules file the corrected receipt again.

    Returns:
        The receipt as it now stands, or None when there is no such receipt.

    Raises:
        ValueError: a field that cannot be corrected, or a value of the wrong shape (pydantic's message).
    """
    unknown = set(changes) - {*CORRECTABLE, "category"}
    if unknown:
        raise ValueError(f"cannot correct {', '.join(sorted(unknown))}; correctable: {', '.join(CORRECTABLE)}, "
                         "category")
    stored = store.receipts.get(receipt_id)
    if stored is None:
        return None
    fields = {k: v for k, v in changes.items() if k != "category"}
    corrected = Receipt.model_validate(stored.receipt.model_dump() | fields)
    corrected = check(corrected, today=today)
    category: str | None
    if "category" in changes and changes["category"]:
        category, source = str(changes["category"]), "user"
    elif stored.category_source == "user" and "category" not in changes:
        category, source = stored.category, "user"
    else:
        category, source = categorise(corrected.merchant, [it.name for it in corrected.items],
                                      store.ledger.categories()), "rule"
    if not store.receipts.correct(receipt_id, corrected, [*fields, "category"], category=category,
                                  category_source=source):
        return None
    _flag_duplicate(store, receipt_id, corrected)
    return store.receipts.get(receipt_id)


def refile(store: Store) -> int:
    """File again, under the current rules, every receipt the rules filed. Returns how many changed category."""
    categories = store.ledger.categories()
    moves = {}
    for rid, merchant, items, current in store.ledger.filed_by_rule():
        new = categorise(merchant, items, categories)
        if new != current:
            moves[rid] = new
    store.receipts.recategorise(moves)
    return len(moves)
