"""Personal data in the text read from a photo: Microsoft Presidio's pattern recognizers (`presidio-analyzer`, MIT)
on a blank spaCy pipeline, so no spaCy model is downloaded (and no PERSON / LOCATION names are found: those need a
trained NER model).

Recognizers (each validates what its pattern matches: Luhn for cards, the IBAN checksum, the Korean resident
registration number's check digit, `phonenumbers` for phones in the regions of `PHONE_REGIONS`): credit cards,
e-mail addresses, phone numbers, IBANs, IP addresses, URLs, Korean resident and business registration numbers.
Each finding is mapped back to the OCR line it was read in, so it carries that line's box.
"""
from __future__ import annotations

import os
import re
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

from clip_embedder.models.base import LazyModel
from clip_embedder.models.ocr import OcrLine, line_rows

#: phone-number regions tried (`phonenumbers` region codes): Korea first, then the common English-speaking ones
PHONE_REGIONS = ("KR", "US", "GB", "CA", "AU", "IN", "DE", "FR")
#: Presidio's entity types → words a person reads
KINDS = {"CREDIT_CARD": "card number", "EMAIL_ADDRESS": "e-mail address", "PHONE_NUMBER": "phone number",
         "IBAN_CODE": "IBAN", "IP_ADDRESS": "IP address", "URL": "URL", "KR_RRN": "Korean resident registration number",
         "KR_BRN": "Korean business registration number"}
#: a finding less sure than this is not reported (Presidio scores a phone number 0.4)
MIN_SCORE = 0.4
#: kinds with a floor of their own: Presidio scores a URL without a scheme 0.5, and OCR noise on photo credits
#: ("wwwjuannonly.coml.So") reads as one; with "http(s)://" it scores 0.6
KIND_MIN_SCORE = {"URL": 0.6}
#: OCR drops the space between a label and a number ("Tel010-1234-5678", "IBANDE89…", "个10.0.0.254" where a Korean
#: label was read as Chinese), which hides the number from its recognizer: the space goes back after the label "IBAN"
#: before a country code, after a word of three or more Latin letters that starts a token, and after any Hangul, CJK
#: character or colon — never inside a token such as an IBAN's "NL91ABNA0417"
_GLUED = (re.compile(r"\b(IBAN)(?=[A-Z]{2}\d{2})", re.I), re.compile(r"\b([A-Za-z]{3,})(?=\d)"),
          re.compile(r"([\uac00-\ud7a3\u3131-\u318e\u4e00-\u9fff:])(?=\d)"))


#: a date, which `phonenumbers` will take for a phone number ("03.22.2010 13" on a COCO128 photo's sign)
_DATE = re.compile(r"\b\d{1,2}[./]\d{1,2}[./]\d{2,4}\b|\b\d{4}[-./]\d{1,2}[-./]\d{1,2}\b")


def looks_like_date(text: str) -> bool:
    """Whether `text` holds a date (dd.mm.yyyy, mm/dd/yy, yyyy-mm-dd …): such a "phone number" is not one."""
    return _DATE.search(text) is not None


def unglue(text: str) -> str:
    """`text` with a space put back between a label and the number OCR glued to it (`_GLUED`)."""
    if not re.match(r"^[A-Z]{2}\d{2}[A-Z0-9]{8,}$", text.strip()):  # a bare IBAN is left alone
        for pattern in _GLUED:
            text = pattern.sub(r"\1 ", text)
    return text


@dataclass(frozen=True)
class PersonalDataFinding:
    """Personal data found in one OCR line: `kind` (Presidio's entity type, e.g. CREDIT_CARD), `text` (the match,
    masked for the log-safe `masked`), `score` 0..1, and the line's `bbox` xyxy pixels."""

    kind: str
    text: str
    score: float
    bbox: tuple[float, float, float, float]

    @property
    def masked(self) -> str:
        """The match with all but its last four characters hidden ("•••• 1111")."""
        return "•" * max(0, len(self.text) - 4) + self.text[-4:]

    @property
    def describe(self) -> str:
        return KINDS.get(self.kind, self.kind.lower().replace("_", " "))


class PresidioRecognizer(LazyModel):
    """`PERSONAL_DATA=presidio|off`: Presidio's pattern recognizers over each OCR line (~13 s to load: spaCy and
    Presidio's imports; ~1–5 ms per line)."""

    name = "presidio"

    @classmethod
    def from_settings(cls, settings: Any) -> PresidioRecognizer:
        return cls()

    @property
    def signature(self) -> str:
        return f"presidio:{','.join(KINDS)}:{MIN_SCORE:g}"

    def _load(self) -> None:
        # its e-mail recognizer's tldextract would fetch the public suffix list first (and hang offline)
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        try:
            import spacy  # noqa: PLC0415
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry  # noqa: PLC0415
            from presidio_analyzer.nlp_engine import SpacyNlpEngine  # noqa: PLC0415
            from presidio_analyzer.predefined_recognizers import (  # noqa: PLC0415
                CreditCardRecognizer,
                EmailRecognizer,
                IbanRecognizer,
                IpRecognizer,
                KrBrnRecognizer,
                KrRrnRecognizer,
                PhoneRecognizer,
                UrlRecognizer,
            )
        except ImportError as e:
            raise RuntimeError("PERSONAL_DATA=presidio needs the PyPI package presidio-analyzer==2.2.366, or set "
                               "PERSONAL_DATA=off") from e
        with tempfile.TemporaryDirectory(prefix="blank-spacy-") as folder:
            spacy.blank("en").to_disk(folder)  # a tokenizer only: no model download, no names found
            nlp = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": folder}])
            nlp.load()
        registry = RecognizerRegistry(supported_languages=["en"])
        for recognizer in (CreditCardRecognizer(), EmailRecognizer(), PhoneRecognizer(supported_regions=PHONE_REGIONS),
                           IbanRecognizer(), IpRecognizer(), UrlRecognizer(),
                           KrRrnRecognizer(supported_language="en"), KrBrnRecognizer(supported_language="en")):
            registry.add_recognizer(recognizer)
        self._engine = AnalyzerEngine(registry=registry, nlp_engine=nlp, supported_languages=["en"])
        self._run_lock = threading.Lock()

    def find_in_text(self, text: str) -> list[tuple[str, str, float]]:
        """(kind, matched text, score) of each finding in `text`, best first; a finding under its floor (`MIN_SCORE`,
        `KIND_MIN_SCORE`), a "phone number" that is a date, or a finding inside a better or equal one (the "URL"
        inside an e-mail address) is dropped."""
        self.load()
        with self._run_lock:
            results = self._engine.analyze(text, language="en", score_threshold=MIN_SCORE)
        results.sort(key=lambda r: (-r.score, -(r.end - r.start)))
        kept: list[Any] = []
        for r in results:
            if r.score < KIND_MIN_SCORE.get(r.entity_type, MIN_SCORE):
                continue
            if r.entity_type == "PHONE_NUMBER" and looks_like_date(text[r.start:r.end]):
                continue
            if not any(k.start <= r.start and r.end <= k.end for k in kept):
                kept.append(r)
        return [(r.entity_type, text[r.start:r.end], round(float(r.score), 3)) for r in kept]

    def find(self, lines: list[OcrLine]) -> list[PersonalDataFinding]:
        """The personal data in OCR lines, each finding with its box: the union of the boxes of the lines it was read
        in. Lines on one row (OCR often cuts "4111 1111 1111 1111" into two boxes) are read together, left to right."""
        out = []
        for row in line_rows(lines):
            text, spans = "", []
            for line in (lines[i] for i in row):
                read = unglue(line.text)
                spans.append((len(text), len(text) + len(read), line.bbox))
                text += read + " "
            for kind, match, score in self.find_in_text(text.rstrip()):
                start = text.find(match)
                boxes = [b for s, e, b in spans if s < start + len(match) and start < e] or [lines[row[0]].bbox]
                box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
                       max(b[3] for b in boxes))
                out.append(PersonalDataFinding(kind, match, score, box))
        return out

