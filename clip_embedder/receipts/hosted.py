"""Hosted vision-language models as receipt extractors (`RECEIPT_EXTRACTOR=openai|bedrock`): the photo and a prompt
naming the fields, their types and an example go to the provider of issue "Analyse a photo" (the same clients,
retries, timeouts and key: ANALYSIS_BASE_URL, ANALYSIS_MODEL, ANALYSIS_API_KEY, ANALYSIS_TEMPERATURE 0.2 …); the
answer is constrained by a JSON schema, validated, and checked like every extractor's (`rules.check`)."""
from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, Field

from clip_embedder.analysis.providers.base import HostedProvider, encode_for_sending, register_task
from clip_embedder.analysis.records import Usage
from clip_embedder.receipts.parsing import iso, parse_date, parse_time
from clip_embedder.receipts.records import Receipt, ReceiptItem
from clip_embedder.receipts.rules import check

PROMPT_FILE = Path(__file__).resolve().parent / "prompts" / "receipt.txt"
TASK = "receipt"


class ItemAnswer(BaseModel):
    name: str = ""
    quantity: float | None = None
    unit_price: float | None = None
    amount: float | None = None


class ReceiptAnswer(BaseModel):
    """What the receipt prompt asks for (every key present; null where the receipt does not show it)."""

    merchant: str | None = None
    address: str | None = None
    date: str | None = None
    time: str | None = None
    items: list[ItemAnswer] = Field(default_factory=list)
    subtotal: float | None = None
    tax: float | None = None
    total: float | None = None
    currency: str | None = None
    payment_method: str | None = None


def _nullable(kind: str) -> dict[str, Any]:
    return {"type": [kind, "null"]}


#: the answer's JSON schema (OpenAI's strict structured outputs: every key required, null allowed)
RECEIPT_SCHEMA: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "required": ["merchant", "address", "date", "time", "items", "subtotal", "tax", "total", "currency",
                 "payment_method"],
    "properties": {
        **{k: _nullable("string") for k in ("merchant", "address", "date", "time", "currency", "payment_method")},
        **{k: _nullable("number") for k in ("subtotal", "tax", "total")},
        "items": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "quantity", "unit_price", "amount"],
            "properties": {"name": {"type": "string"}, **{k: _nullable("number") for k in (
                "quantity", "unit_price", "amount")}}}}}}
register_task(TASK, ReceiptAnswer, RECEIPT_SCHEMA)


def load_prompt(folder: Path | None = None) -> str:
    """The receipt prompt: `folder`/receipt.txt when it exists (ANALYSIS_PROMPTS_DIR), else the built-in one."""
    own = Path(folder) / "receipt.txt" if folder is not None else None
    return (own if own is not None and own.is_file() else PROMPT_FILE).read_text(encoding="utf-8").strip()


def _day(text: str | None, today: date | None) -> date | None:
    """The date the model wrote: ISO 8601 as asked, else whatever `parse_date` reads in it."""
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return parse_date(text, today=today)


class HostedReceiptExtractor:
    """A receipt extractor reading the photo itself through a hosted provider (no OCR of ours)."""

    def __init__(self, provider: HostedProvider, prompt: str | None = None):
        self.provider, self.prompt = provider, prompt or load_prompt()
        self.name = provider.provider
        self.version = provider.model
        #: tokens spent so far (input, output, calls)
        self.usage = Usage()

    def extract(self, lines: Any, *, today: date | None = None) -> Receipt:
        raise TypeError(f"the {self.name} extractor reads photos, not text lines: use the rules or the learned "
                        "extractor for --lines")

    def extract_image(self, image: Image.Image, *, today: date | None = None) -> Receipt:
        """The receipt in an RGB photo, checked (`rules.check`).

        Raises:
            ProviderError: the provider failed, or answered invalid JSON twice.
        """
        jpeg, _, sent = encode_for_sending(image)
        prompt = self.prompt.replace("{width}", str(sent[0])).replace("{height}", str(sent[1]))
        a: Any = self.provider.ask(TASK, prompt, jpeg, self.usage)
        day = _day(a.date, today)
        receipt = Receipt(
            merchant=(a.merchant or "").strip() or None, address=(a.address or "").strip() or None,
            date=iso(day), time=parse_time(a.time) if a.time else None,
            items=[ReceiptItem(**it.model_dump()) for it in a.items if it.name.strip()],
            subtotal=a.subtotal, tax=a.tax, total=a.total,
            currency=a.currency.strip().upper() if a.currency and a.currency.strip() else None,
            payment_method=a.payment_method, extractor=self.name,
            confidence={k: 0.9 for k in ("merchant", "address", "date", "total") if getattr(a, k) is not None})
        return check(receipt, today=today)
