"""The shared SROIE layout and its scoring (ICDAR 2019 SROIE task 3, as the dataset's README defines it).

Layout: `img/NNN.jpg` (the scan), `key/NNN.json` (`company`, `date` as printed, `address`, `total` as printed),
`box/NNN.csv` (one text line per row: `x1,y1,x2,y2,x3,y3,x4,y4,text`, four corners clockwise from the top-left).
Scoring: each of the four fields of each receipt counts once; merchant and address are right when equal after
upper-casing and collapsing white space, the date when it is the same calendar date (the key is day first), the
total when it is the same amount; precision, recall and F1 micro-averaged; an empty answer is a miss, not a wrong
answer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from clip_embedder.models.ocr import OcrLine
from clip_embedder.receipts.parsing import iso, normalise, parse_amount, parse_date
from clip_embedder.receipts.records import FIELDS, Receipt

#: our field → the key's name
KEY_NAMES = {"merchant": "company", "address": "address", "date": "date", "total": "total"}


@dataclass(frozen=True)
class SroieReceipt:
    """One receipt of the layout: its id (the file stem), image path (None with `--text-only`), key fields (ours:
    merchant, address, date, total, as printed) and ground-truth lines."""

    id: str
    image: Path | None
    key: dict[str, str]
    lines: list[OcrLine]


def read_box_csv(path: Path) -> list[OcrLine]:
    """Ground-truth lines of a `box/NNN.csv` as `OcrLine`s (confidence 1, bbox = the corners' xyxy); the text may
    contain commas (only the first eight split)."""
    out = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = raw.split(",", 8)
        if len(parts) < 9 or not parts[8].strip():
            continue
        try:
            xy = [float(v) for v in parts[:8]]
        except ValueError:
            continue
        xs, ys = xy[0::2], xy[1::2]
        out.append(OcrLine(parts[8].strip(), 1.0, (min(xs), min(ys), max(xs), max(ys))))
    return out


def read_layout(folder: Path, *, text_only: bool = False) -> list[SroieReceipt]:
    """Every receipt of a folder in the shared layout, sorted by id.

    Raises:
        FileNotFoundError: the folder lacks `key/` or `box/` (or `img/` unless `text_only`).
    """
    folder = Path(folder)
    for sub in ("key", "box") + (() if text_only else ("img",)):
        if not (folder / sub).is_dir():
            raise FileNotFoundError(f"{folder} has no {sub}/ folder: expected the SROIE layout (img/, key/, box/; "
                                    "--text-only needs key/ and box/ alone)")
    out = []
    for key_path in sorted((folder / "key").glob("*.json")):
        box = folder / "box" / f"{key_path.stem}.csv"
        if not box.is_file():
            continue
        raw = json.loads(key_path.read_text(encoding="utf-8"))
        key = {ours: str(raw.get(theirs, "")) for ours, theirs in KEY_NAMES.items()}
        image = folder / "img" / f"{key_path.stem}.jpg"
        out.append(SroieReceipt(key_path.stem, None if text_only or not image.is_file() else image, key,
                                read_box_csv(box)))
    return out


def field_right(name: str, answer: str | float | None, truth: str) -> bool:
    """Whether one extracted field matches the key under the task-3 rules of this module's docstring."""
    if answer is None or answer == "" or not truth:
        return False
    if name in ("merchant", "address"):
        return normalise(str(answer)) == normalise(truth)
    if name == "date":
        return iso(parse_date(truth)) == str(answer)
    truth_amount = parse_amount(truth)
    return truth_amount is not None and abs(float(answer) - truth_amount) < 0.005


@dataclass
class Score:
    """Micro precision / recall / F1 over every field of every receipt, and per field."""

    right: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    expected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))

    def add(self, receipt: Receipt, key: dict[str, str]) -> None:
        for name in FIELDS:
            answer = getattr(receipt, name)
            self.expected[name] += bool(key.get(name))
            self.answered[name] += answer not in (None, "")
            self.right[name] += field_right(name, answer, key.get(name, ""))

    @staticmethod
    def _prf(right: int, answered: int, expected: int) -> dict[str, float]:
        p = right / answered if answered else 0.0
        r = right / expected if expected else 0.0
        return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0}

    def summary(self) -> dict:
        """{"precision", "recall", "f1", "per_field": {field: {"precision", "recall", "f1"}}}."""
        total = self._prf(sum(self.right.values()), sum(self.answered.values()), sum(self.expected.values()))
        return {**total, "per_field": {n: self._prf(self.right[n], self.answered[n], self.expected[n])
                                       for n in FIELDS}}
