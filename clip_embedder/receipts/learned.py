"""The learned extractor (`RECEIPT_EXTRACTOR=learned`): a gradient-boosted classifier (scikit-learn's
`HistGradientBoostingClassifier`) labels each text line of a receipt as merchant, address, date, total or other from
its position, its text's shape, its patterns and keywords, and its neighbours'; the fields are then read from the
lines it chose (the date and the total through the same parsers as the rules).

Training labels come from the key fields: a line is the merchant's / address's when its text is (nearly) part of
that field, the date's when it holds the key date, the total's when it holds the key amount on a row with a total
keyword (any line holding the amount when no such row exists).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from difflib import SequenceMatcher
from typing import Any

import numpy as np

from clip_embedder.models.ocr import OcrLine, line_rows
from clip_embedder.receipts.parsing import (
    ADDRESS_WORDS,
    COMPANY_WORDS,
    DATE_SPAN,
    STOP_ADDRESS,
    amounts,
    has_any,
    iso,
    normalise,
    parse_amount,
    parse_date,
    parse_time,
    total_rank,
)
from clip_embedder.receipts.records import Receipt, ReceiptLine
from clip_embedder.receipts.rules import RulesExtractor, amount_reader, check, currency_of

CLASSES = ("other", "merchant", "address", "date", "total")
#: a line whose text matches this share of a key field's text is labelled as part of it
MATCH = 0.8


def _shape(text: str) -> list[float]:
    n = max(len(text), 1)
    return [len(text), sum(c.isdigit() for c in text) / n, sum(c.isalpha() for c in text) / n,
            sum(c.isupper() for c in text) / n, len(text.split()), float(":" in text), float("," in text)]


def _flags(text: str) -> list[float]:
    up = text.upper()
    found = amounts(text)
    return [float(has_any(up, COMPANY_WORDS)), float(has_any(up, ADDRESS_WORDS)), float(has_any(up, STOP_ADDRESS)),
            float(DATE_SPAN.search(text) is not None), float(bool(found)), float(total_rank(text)),
            float(bool(re.search(r"\b\d{5}\b", text))), float("DATE" in up),
            float(bool(re.search(r"\d{2}:\d{2}", text))),
            float(bool(re.fullmatch(r"[\s(]*[\dA-Z]{4,}-[A-Z\d]+[)\s]*", text.strip()))),
            float(has_any(up, ("CASH", "CHANGE", "TENDER", "PAID"))), float(has_any(up, ("GST", "TAX", "SST"))),
            max(found) if found else 0.0]


def features(lines: list[OcrLine]) -> np.ndarray:
    """One row per line (in the order given): position on the receipt (vertical and horizontal, relative to its
    text's extent; the line's rank), text shape, pattern and keyword flags, the same flags of the previous and next
    line and of the rest of its row. float32 [n_lines, n_features]."""
    if not lines:
        return np.zeros((0, 0), np.float32)
    x0, y0 = min(ln.bbox[0] for ln in lines), min(ln.bbox[1] for ln in lines)
    x1, y1 = max(ln.bbox[2] for ln in lines), max(ln.bbox[3] for ln in lines)
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    own = [_flags(ln.text) for ln in lines]
    row_of = {i: row for row in line_rows(lines) for i in row}
    out = []
    for i, ln in enumerate(lines):
        b = ln.bbox
        mates = [j for j in row_of[i] if j != i]
        row_flags = np.max([own[j] for j in mates], axis=0).tolist() if mates else [0.0] * len(own[i])
        out.append([(b[1] - y0) / h, (b[3] - y0) / h, (b[0] - x0) / w, (b[2] - x0) / w, (b[3] - b[1]) / h,
                    i / len(lines), i, len(lines) - i, *_shape(ln.text), *own[i],
                    *(own[i - 1] if i > 0 else [0.0] * len(own[i])),
                    *(own[i + 1] if i + 1 < len(lines) else [0.0] * len(own[i])), *row_flags])
    return np.asarray(out, np.float32)


def _part_of(text: str, field: str) -> bool:
    t, f = normalise(text), normalise(field)
    if len(t) < 3 or not f:
        return False
    if t in f:
        return True
    m = SequenceMatcher(None, t, f, autojunk=False)
    return sum(b.size for b in m.get_matching_blocks()) / len(t) >= MATCH and len(t) <= len(f) + 3


def labels(lines: list[OcrLine], key: dict[str, str]) -> np.ndarray:
    """The training label of each line (index into `CLASSES`) from a receipt's key fields."""
    y = np.zeros(len(lines), np.int64)
    key_date = iso(parse_date(key.get("date", "")))
    total = parse_amount(key.get("total", ""))
    row_of = {i: row for row in line_rows(lines) for i in row}
    holders = [i for i, ln in enumerate(lines)
               if total is not None and any(abs(a - total) < 0.005 for a in amounts(ln.text))]
    keyed = [i for i in holders if max(total_rank(lines[j].text) for j in row_of[i]) >= 0]
    for i, ln in enumerate(lines):
        if _part_of(ln.text, key.get("merchant", "")):
            y[i] = CLASSES.index("merchant")
        elif _part_of(ln.text, key.get("address", "")):
            y[i] = CLASSES.index("address")
        elif key_date and iso(parse_date(ln.text)) == key_date:
            y[i] = CLASSES.index("date")
        elif i in (keyed or holders):
            y[i] = CLASSES.index("total")
    return y


@dataclass
class LearnedExtractor:
    """A trained line classifier and the decoding of its labels into fields. Build with `train`; store and load it
    as an MLflow model (`clip_embedder.receipts.registry`)."""

    model: Any
    version: str = "unregistered"
    name = "learned"

    @classmethod
    def train(cls, receipts: list[tuple[list[OcrLine], dict[str, str]]], *, seed: int = 0,
              **params: Any) -> LearnedExtractor:
        """Fit on (lines, key) pairs. `params` go to `HistGradientBoostingClassifier` (defaults: 300 iterations,
        learning rate 0.1, max depth 6, balanced class weights)."""
        from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: PLC0415

        xs, ys = [], []
        for lines, key in receipts:
            ordered = sorted(lines, key=lambda ln: (ln.bbox[1], ln.bbox[0]))
            xs.append(features(ordered))
            ys.append(labels(ordered, key))
        model = HistGradientBoostingClassifier(**{"max_iter": 300, "learning_rate": 0.1, "max_depth": 6,
                                                  "class_weight": "balanced", "random_state": seed, **params})
        model.fit(np.concatenate(xs), np.concatenate(ys))
        return cls(model)

    def probabilities(self, lines: list[OcrLine]) -> np.ndarray:
        """P(class) per line, float [n_lines, len(CLASSES)] (columns in `CLASSES` order)."""
        proba = np.zeros((len(lines), len(CLASSES)))
        if lines:
            proba[:, self.model.classes_] = self.model.predict_proba(features(lines))
        return proba

    def extract(self, lines: list[OcrLine], *, today: date | None = None) -> Receipt:
        """The fields of a receipt from its text lines: merchant and address from the lines labelled so (in reading
        order), the date and total from the surest line holding one; the rest (items, subtotal, tax, currency,
        payment) by the rules; then the checks."""
        lines = sorted(lines, key=lambda ln: (ln.bbox[1], ln.bbox[0]))
        base = RulesExtractor().extract(lines, today=today)
        if not lines:
            return base
        p = self.probabilities(lines)
        chosen: dict[int, str] = {}

        def span(name: str) -> str | None:
            # the surest line, grown up and down through neighbours labelled the same: one contiguous block
            col = CLASSES.index(name)
            seed = int(p[:, col].argmax())
            if p[seed, col] < 0.2 or seed in chosen:
                return None
            lo = hi = seed
            while lo > 0 and lo - 1 not in chosen and p[lo - 1].argmax() == col:
                lo -= 1
            while hi + 1 < len(lines) and hi + 1 not in chosen and p[hi + 1].argmax() == col:
                hi += 1
            chosen.update(dict.fromkeys(range(lo, hi + 1), name))
            return " ".join(lines[i].text.strip() for i in range(lo, hi + 1))

        def best(name: str, read) -> tuple[Any, float]:
            col = CLASSES.index(name)
            for i in np.argsort(-p[:, col])[:3]:
                value = read(lines[i].text)
                if value:
                    chosen[int(i)] = name
                    return value, float(p[i, col])
            return None, 0.0

        merchant, address = span("merchant"), span("address")
        day, p_date = best("date", lambda t: parse_date(t, today=today))
        read = amount_reader(base.currency)
        total, p_total = best("total", lambda t: read(t)[-1] if read(t) else None)
        base.merchant, base.address, base.date, base.total = merchant, address, iso(day) or base.date, total
        base.time = parse_time(next((ln.text for i, ln in enumerate(lines) if chosen.get(i) == "date"), "")) \
            or base.time
        base.currency = base.currency or currency_of(" ".join(ln.text for ln in lines))
        base.lines = [ReceiptLine(text=ln.text, bbox_xyxy=ln.bbox, field=chosen.get(i)) for i, ln in enumerate(lines)]
        base.confidence = {"merchant": round(float(p[:, 1].max()), 3), "address": round(float(p[:, 2].max()), 3),
                           "date": round(p_date, 3), "total": round(p_total, 3)}
        base.extractor = f"{self.name}:{self.version}"
        return check(base, today=today)
