"""Text in the photo: OCR engines behind one interface (`OCR=rapidocr|tesseract|off`).

| engine      | what it reads                         | needs                                                  |
|-------------|---------------------------------------|--------------------------------------------------------|
| `rapidocr`  | English + Chinese (PP-OCRv4, ONNX)    | PyPI `rapidocr-onnxruntime` (models inside the wheel)  |
| `tesseract` | `OCR_LANGS`, default `kor+eng`        | Debian `tesseract-ocr{,-eng,-kor}`, PyPI `pytesseract` |

Each engine returns `OcrLine`s (text, confidence 0..1, bbox xyxy pixels of the image it was given)
and loads lazily under a lock, like the embedders (`LazyModel`); a missing engine or language raises
RuntimeError naming what to install.
"""
from __future__ import annotations

import re
import shutil
import threading
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from clip_embedder.models.base import LazyModel
from clip_embedder.models.registry import OCR_ENGINES

#: images are read at most this many pixels on their longer side (OCR time grows with the area)
MAX_SIDE = 2000
#: OCR_GATE: the text detector alone at the photo's own size (at most GATE_SIDE px) with DB thresholds lower than
#: RapidOCR's (0.3, 0.5): the operating point `benchmarks/bench_ocr_gate.py` measured (56 of 128 COCO128 photos
#: pass; 5 of the 29 with a sure line of text are skipped)
GATE_SIDE = 640
GATE_THRESH = 0.2
GATE_BOX_THRESH = 0.3
_HANGUL = re.compile(r"^[\uac00-\ud7a3\u3131-\u318e]+$")


@dataclass(frozen=True)
class OcrLine:
    """One line (or word group) of text found in an image: confidence 0..1, bbox xyxy pixels."""

    text: str
    confidence: float
    bbox: tuple[float, float, float, float]


class OcrEngine(LazyModel):
    """Base class of the OCR engines (the models' lazy lifecycle): `read(image)` → lines above `min_confidence`."""

    name: str

    def __init__(self, min_confidence: float = 0.5):
        super().__init__()
        self.min_confidence = float(min_confidence)

    @property
    def signature(self) -> str:
        """What the text depends on: stored with each image so a change of engine re-reads it."""
        return f"{self.name}:{self.min_confidence:g}"

    @abstractmethod
    def _read(self, image: Image.Image) -> list[OcrLine]: ...

    def read(self, image: Image.Image) -> list[OcrLine]:
        """The text lines of an RGB image, top to bottom, with boxes in the image's own pixels."""
        self.load()
        scale = 1.0
        if max(image.size) > MAX_SIDE:
            scale = max(image.size) / MAX_SIDE
            image = image.resize((round(image.width / scale), round(image.height / scale)), Image.Resampling.BILINEAR)
        lines = [ln for ln in self._read(image.convert("RGB"))
                 if ln.text.strip() and ln.confidence >= self.min_confidence]
        lines = [OcrLine(ln.text.strip(), round(ln.confidence, 4),
                         (round(ln.bbox[0] * scale, 1), round(ln.bbox[1] * scale, 1), round(ln.bbox[2] * scale, 1),
                          round(ln.bbox[3] * scale, 1))) for ln in lines]
        return sorted(lines, key=lambda ln: (ln.bbox[1], ln.bbox[0]))


class RapidOcrEngine(OcrEngine):
    """RapidOCR (PP-OCRv4 detection + recognition on onnxruntime; English and Chinese)."""

    name = "rapidocr"

    @classmethod
    def from_settings(cls, settings: Any) -> RapidOcrEngine:
        """OCR=rapidocr as configured: OCR_MIN_CONFIDENCE, OCR_GATE."""
        return cls(settings.ocr_min_confidence, gate=getattr(settings, "ocr_gate", False))

    def __init__(self, min_confidence: float = 0.5, *, gate: bool = False):
        super().__init__(min_confidence)
        self.gate = gate
        #: photos the gate found no text in (their recognition was skipped), and photos it let through
        self.gate_skipped = self.gate_passed = 0

    @property
    def signature(self) -> str:
        """What the text depends on; the gate is part of it (switching it re-reads the photos)."""
        return super().signature + (f";gate={GATE_SIDE}/{GATE_THRESH}/{GATE_BOX_THRESH}" if self.gate else "")

    def _load(self) -> None:
        try:
            import rapidocr_onnxruntime.main as rapid  # noqa: PLC0415
            from rapidocr_onnxruntime import RapidOCR  # noqa: PLC0415
            from rapidocr_onnxruntime.ch_ppocr_det import TextDetector  # noqa: PLC0415
        except ImportError as e:
            raise RuntimeError("OCR=rapidocr needs the PyPI package rapidocr-onnxruntime (pip install "
                               "rapidocr-onnxruntime==1.4.4), or set OCR=tesseract / OCR=off") from e
        self._engine = RapidOCR()
        self._run_lock = threading.Lock()
        if self.gate:  # the same text detector, at the photo's own size (no upscaling), lower thresholds
            det = rapid.update_model_path(rapid.read_yaml(rapid.DEFAULT_CFG_PATH))["Det"]
            det.update(limit_type="min", limit_side_len=32, thresh=GATE_THRESH, box_thresh=GATE_BOX_THRESH)
            self._gate = TextDetector(det)

    def has_text(self, image: Image.Image) -> bool:
        """The gate: whether RapidOCR's text detector alone, on the photo at most GATE_SIDE px on its longer side,
        finds any text region. ~128 ms for a 640x480 photo on 2 AMD EPYC cores (`benchmarks/bench_ocr_gate.py`)."""
        self.load()
        scale = min(1.0, GATE_SIDE / max(image.size))
        small = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.BILINEAR) if scale < 1 else image
        with self._run_lock:
            boxes, _ = self._gate(np.asarray(small))
        return boxes is not None and len(boxes) > 0

    def _read(self, image: Image.Image) -> list[OcrLine]:
        if self.gate and not self.has_text(image):
            self.gate_skipped += 1
            return []
        self.gate_passed += self.gate
        with self._run_lock:  # one onnxruntime session per engine
            result, _ = self._engine(np.asarray(image))
        out = []
        for box, text, conf in result or []:
            xs, ys = [p[0] for p in box], [p[1] for p in box]
            out.append(OcrLine(str(text), float(conf), (min(xs), min(ys), max(xs), max(ys))))
        return out


class TesseractEngine(OcrEngine):
    """Tesseract 5 through pytesseract, sparse-text layout by default (`--psm 11`: signs and captions in photos;
    `psm=4`, one column of text, for receipts).

    Words under `min_confidence` are dropped, then the words of each Tesseract line are joined into one
    `OcrLine`. Tesseract's Korean model often splits a word into syllables; adjacent Hangul pieces of one
    line with a gap under 0.35 of the taller piece's height are joined back into the word.
    """

    name = "tesseract"

    @classmethod
    def from_settings(cls, settings: Any) -> TesseractEngine:
        """OCR=tesseract as configured: OCR_LANGS, OCR_MIN_CONFIDENCE."""
        return cls(settings.ocr_langs, settings.ocr_min_confidence)

    def __init__(self, langs: str = "kor+eng", min_confidence: float = 0.5, *, psm: int = 11, min_width: int = 0):
        super().__init__(min_confidence)
        self.langs = langs
        #: Tesseract's page segmentation: 11 sparse text (photos), 4 one column of text (receipts)
        self.psm = psm
        #: narrower images are enlarged to this width before reading (boxes are given in the original's pixels)
        self.min_width = min_width

    @property
    def signature(self) -> str:
        return f"{self.name}[{self.langs}]:{self.min_confidence:g}" + (f":psm{self.psm}" if self.psm != 11 else "") \
            + (f":w{self.min_width}" if self.min_width else "")

    def _load(self) -> None:
        try:
            import pytesseract  # noqa: PLC0415
        except ImportError as e:
            raise RuntimeError("OCR=tesseract needs the PyPI package pytesseract") from e
        if shutil.which("tesseract") is None:
            raise RuntimeError("OCR=tesseract needs the tesseract program: apt-get install tesseract-ocr "
                               "tesseract-ocr-eng tesseract-ocr-kor (or set OCR=rapidocr / OCR=off)")
        have = set(pytesseract.get_languages(config=""))
        missing = [lang for lang in self.langs.split("+") if lang not in have]
        if missing:
            raise RuntimeError(f"tesseract lacks the language data {missing} (OCR_LANGS={self.langs}): apt-get install "
                               + " ".join(f"tesseract-ocr-{m}" for m in missing))
        self._pt = pytesseract

    def _read(self, image: Image.Image) -> list[OcrLine]:
        # grey levels at the photo's own size: on six Korean captions rendered onto COCO128 photos this read 5 of
        # 6 words, RGB 2 of 6, grey at 2x 2 of 6 (benchmarks/bench_words.py renders the same kind of images)
        grey, f = image.convert("L"), 1.0
        if image.width < self.min_width:
            f = self.min_width / image.width
            grey = grey.resize((self.min_width, round(image.height * f)), Image.Resampling.LANCZOS)
        d = self._pt.image_to_data(grey, lang=self.langs, config=f"--psm {self.psm}", output_type=self._pt.Output.DICT)
        words: dict[tuple[int, int, int], list[tuple[str, float, tuple[float, float, float, float]]]] = {}
        for i, text in enumerate(d["text"]):
            conf = float(d["conf"][i])
            if not str(text).strip() or conf / 100.0 < self.min_confidence:
                continue
            x, y, w, h = (float(d[k][i]) / f for k in ("left", "top", "width", "height"))
            key = (d["block_num"][i], d["par_num"][i], d["line_num"][i])
            words.setdefault(key, []).append((str(text).strip(), conf / 100.0, (x, y, x + w, y + h)))
        out = []
        for pieces in words.values():
            pieces.sort(key=lambda p: p[2][0])
            merged: list[list] = []
            for text, conf, box in pieces:
                prev = merged[-1] if merged else None
                if (prev is not None and _HANGUL.match(prev[0]) and _HANGUL.match(text)
                        and box[0] - prev[2][2] < 0.35 * max(box[3] - box[1], prev[2][3] - prev[2][1], 1.0)):
                    prev[0] += text
                    prev[1] = min(prev[1], conf)
                    prev[2] = (prev[2][0], min(prev[2][1], box[1]), box[2], max(prev[2][3], box[3]))
                else:
                    merged.append([text, conf, box])
            boxes = [b for _, _, b in merged]
            out.append(OcrLine(" ".join(t for t, _, _ in merged), float(np.mean([c for _, c, _ in merged])),
                               (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                max(b[2] for b in boxes), max(b[3] for b in boxes))))
        return out


def line_rows(lines: list[OcrLine]) -> list[list[int]]:
    """Indices of `lines` grouped into rows: a line joins a row when their vertical extents overlap by at least half
    the shorter one's height; rows top to bottom, each left to right (OCR often cuts one printed line into several
    boxes: "4111 1111" + "1111 1111", "TOTAL (RM):" + "9.00")."""
    order = sorted(range(len(lines)), key=lambda i: (lines[i].bbox[1], lines[i].bbox[0]))
    out: list[list[int]] = []
    for i in order:
        b = lines[i].bbox
        for row in out:
            top, bottom = min(lines[j].bbox[1] for j in row), max(lines[j].bbox[3] for j in row)
            if min(bottom, b[3]) - max(top, b[1]) >= 0.5 * min(bottom - top, b[3] - b[1]):
                row.append(i)
                break
        else:
            out.append([i])
    return [sorted(r, key=lambda j: lines[j].bbox[0]) for r in out]


def lexical_text(text: str) -> str:
    """OCR text as keywords: the text itself plus, for runs of adjacent Hangul pieces on a line, their joins
    (pairs and triples), since OCR often splits a Korean word ("김 치찌개") where people type it whole.

    Example: "『 김 치찌개" → "『 김 치찌개 김치찌개".
    """
    extra: list[str] = []
    for line in text.splitlines():
        pieces = [re.sub(r"[^\uac00-\ud7a3\u3131-\u318e]", "", w) for w in line.split()]
        for n in (2, 3):
            for i in range(len(pieces) - n + 1):
                run = pieces[i:i + n]
                if all(run):
                    extra.append("".join(run))
    return " ".join([text, *extra]) if extra else text


def create_ocr(settings) -> OcrEngine | None:
    """The OCR engine the settings ask for (OCR=rapidocr|tesseract), or None (OCR=off): `OCR_ENGINES` in
    `clip_embedder.models.registry`."""
    return OCR_ENGINES.create(settings.ocr, settings)
