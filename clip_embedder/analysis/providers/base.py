"""What every hosted provider shares: the three prompts (files a user may override), the JSON schema of each task's
answer, validation of an answer into the analysis schema (boxes clipped to the image, the four-corner box form
accepted), one retry of an invalid answer, retries of 429 / 5xx / timeouts with backoff honouring `Retry-After`, and
the tokens used."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from clip_embedder.analysis.records import (
    Analysis,
    ImageSize,
    Label,
    Reason,
    ReasonCategory,
    Sensitive,
    Usage,
    clip_box,
)

log = logging.getLogger(__name__)
PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
#: the longer side of the image sent (Anthropic's guidance: images over 1568 px are scaled down anyway)
MAX_SEND_SIDE = 1568
#: characters of an invalid answer written to the log
LOGGED_ANSWER_CHARS = 500
#: backoff of a retried call without Retry-After: 1, 2, 4 … seconds, at most this
MAX_BACKOFF_S = 30.0


class ProviderError(RuntimeError):
    """A hosted provider failed: `status` is the HTTP status the API answers with (502: a bad or failed answer, 503: a
    rate limit outlasted the retries, 504: a timeout), `retry_after` seconds when known."""

    def __init__(self, message: str, status: int = 502, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


class RetryableError(Exception):
    """A call that may succeed when repeated (429, 5xx, a timeout), after `retry_after` seconds when the provider
    said so."""

    def __init__(self, message: str, *, status: int, retry_after: float | None = None):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after


# --- the answers each task's prompt asks for ---------------------------------------------------------------------
class DescribeAnswer(BaseModel):
    description: str = Field(min_length=1)


class ReasonAnswer(BaseModel):
    category: str = "other"
    score: float = Field(0.5, ge=0, le=1)
    evidence: str = ""
    bbox_xyxy: Any = None


class SensitiveAnswer(BaseModel):
    verdict: bool | Literal["YES", "NO", "yes", "no", "Yes", "No"]
    reason: str | None = None
    reasons: list[ReasonAnswer] = Field(default_factory=list)


class LabelAnswer(BaseModel):
    label: str = Field(min_length=1)
    score: float = Field(0.5, ge=0, le=1)
    bbox_xyxy: Any = None
    box: Any = None  # the four-corner form, under another name some models prefer


class LabelsAnswer(BaseModel):
    labels: list[LabelAnswer]


ANSWERS: dict[str, type[BaseModel]] = {"describe": DescribeAnswer, "sensitive": SensitiveAnswer,
                                       "labels": LabelsAnswer}
_BOX = {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 4, "maxItems": 4}
#: the JSON schema each task's answer must follow (OpenAI's strict structured outputs: every key required)
SCHEMAS: dict[str, dict[str, Any]] = {
    "describe": {"type": "object", "additionalProperties": False, "required": ["description"],
                 "properties": {"description": {"type": "string"}}},
    "sensitive": {"type": "object", "additionalProperties": False, "required": ["verdict", "reasons"], "properties": {
        "verdict": {"type": "string", "enum": ["YES", "NO"]},
        "reasons": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["category", "score", "evidence", "bbox_xyxy"],
            "properties": {"category": {"type": "string", "enum": ["face", "person", "personal_data", "nudity",
                                                                   "other"]},
                           "score": {"type": "number"}, "evidence": {"type": "string"}, "bbox_xyxy": _BOX}}}}},
    "labels": {"type": "object", "additionalProperties": False, "required": ["labels"], "properties": {
        "labels": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["label", "score", "bbox_xyxy"],
            "properties": {"label": {"type": "string"}, "score": {"type": "number"}, "bbox_xyxy": _BOX}}}}},
}


def register_task(name: str, answer: type[BaseModel], schema: dict[str, Any]) -> None:
    """Make `name` a task providers can be asked (`HostedProvider.ask`): its answer model and JSON schema (the
    receipt extractor registers "receipt")."""
    ANSWERS[name] = answer
    SCHEMAS[name] = schema


def encode_for_sending(image: Image.Image) -> tuple[bytes, float, tuple[int, int]]:
    """An image as it is sent: JPEG (quality 90), its longer side at most MAX_SEND_SIDE.

    Returns:
        (JPEG bytes, scale = original pixels / sent pixels (≥ 1), the sent size (width, height)).
    """
    scale = max(1.0, max(image.size) / MAX_SEND_SIDE)
    sent = image if scale == 1.0 else image.resize((round(image.width / scale), round(image.height / scale)),
                                                  Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    sent.convert("RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue(), scale, sent.size


@dataclass(frozen=True)
class Prompts:
    """The prompt of each task (`{width}` and `{height}` are replaced by the size of the image sent)."""

    describe: str
    sensitive: str
    labels: str

    @classmethod
    def load(cls, folder: Path | None = None) -> Prompts:
        """The built-in prompts, each replaced by `folder`/<task>.txt where that file exists (ANALYSIS_PROMPTS_DIR).

        Raises:
            FileNotFoundError: `folder` is given but is not a folder.
        """
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"ANALYSIS_PROMPTS_DIR={folder} is not a folder (it should hold describe.txt, "
                                    "sensitive.txt and/or labels.txt)")

        def read(task: str) -> str:
            own = Path(folder) / f"{task}.txt" if folder is not None else None
            return (own if own is not None and own.is_file() else PROMPTS_DIR / f"{task}.txt").read_text().strip()
        return cls(read("describe"), read("sensitive"), read("labels"))

    def for_task(self, task: str, width: int, height: int, extra: str | None = None) -> str:
        text = getattr(self, task).replace("{width}", str(width)).replace("{height}", str(height))
        return f"{text}\n\nAdditional request from the user: {extra.strip()}" if extra and extra.strip() else text


def parse_answer(task: str, raw: str) -> BaseModel:
    """A provider's answer to `task` as its answer model: the JSON object in `raw` (code fences and text around it
    tolerated).

    Raises:
        ValueError: no JSON object, or one that violates the task's answer schema (the message says where).
    """
    text = raw.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fenced:
        text = fenced.group(1).strip()
    if not text.startswith("{") and "{" in text:
        text = text[text.index("{"):text.rindex("}") + 1]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"the answer is not JSON ({e.msg} at character {e.pos})") from None
    try:
        return ANSWERS[task].model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the answer"
        raise ValueError(f"the answer violates the {task} schema: {where}: {first['msg']}") from None


def _category(value: str) -> ReasonCategory:
    v = value.strip().lower().replace(" ", "_").replace("-", "_")
    return v if v in ("face", "person", "personal_data", "nudity") else "other"  # type: ignore[return-value]


def to_analysis(answers: dict[str, BaseModel], size: tuple[int, int], scale: float) -> tuple[dict[str, Any], list[str]]:
    """The analysis fields from validated answers, boxes scaled by `scale` (original / sent pixels) and clipped to the
    original `size`; also the warnings (labels dropped for a box outside the image)."""
    w, h = size
    out: dict[str, Any] = {}
    warnings: list[str] = []

    def box(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, dict):
            value = clip_box(value, round(w / scale), round(h / scale))
            if value is None:
                return None
        return clip_box([float(v) * scale for v in value], w, h)

    if "describe" in answers:
        out["description"] = answers["describe"].description.strip()  # type: ignore[attr-defined]
    if "sensitive" in answers:
        a: Any = answers["sensitive"]
        yes = a.verdict is True or str(a.verdict).upper() == "YES"
        reasons = [Reason(category=_category(r.category), score=r.score, evidence=r.evidence,
                          bbox_xyxy=box(r.bbox_xyxy)) for r in a.reasons]
        if yes and not reasons:
            reasons = [Reason(category="other", score=1.0, evidence=a.reason or "the provider said YES")]
        out["sensitive"] = Sensitive(verdict=yes, score=max((r.score for r in reasons), default=0.0) if yes else 0.0,
                                     reasons=reasons if yes else [])
    if "labels" in answers:
        labels = []
        for item in answers["labels"].labels:  # type: ignore[attr-defined]
            try:
                b = box(item.bbox_xyxy if item.bbox_xyxy is not None else item.box)
            except ValueError:
                b = None
            if b is None:
                warnings.append(f"label {item.label!r} dropped: its box lies outside the image or is malformed")
                continue
            labels.append(Label(label=item.label, score=item.score, bbox_xyxy=b, source="provider"))
        out["labels"] = labels
    return out, warnings


class HostedProvider(ABC):
    """A vision-language model behind an API: one call per task, each with its prompt, the image and the task's JSON
    schema; the answers validated and merged into one `Analysis`."""

    provider: str

    def __init__(self, model: str, *, temperature: float = 0.2, max_tokens: int = 1024, timeout_s: float = 60.0,
                 max_retries: int = 3, prompts: Prompts | None = None):
        self.model, self.temperature, self.max_tokens = model, temperature, max_tokens
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.prompts = prompts or Prompts.load()

    @property
    def signature(self) -> str:
        """What a stored analysis depends on: provider, model, sampling and the prompts (a change re-runs it)."""
        digest = hashlib.sha256("\0".join((self.prompts.describe, self.prompts.sensitive, self.prompts.labels))
                                .encode()).hexdigest()[:12]
        return f"{self.provider}:{self.model}:t={self.temperature:g}:prompts={digest}"

    @abstractmethod
    def _call(self, task: str, prompt: str, jpeg: bytes) -> tuple[str, int, int]:
        """One request: (answer text, input tokens, output tokens).

        Raises:
            RetryableError: a 429, a 5xx, a timeout or a dropped connection.
            ProviderError: anything else (a 4xx: a wrong key, model or request).
        """

    def _call_with_retries(self, task: str, prompt: str, jpeg: bytes) -> tuple[str, int, int]:
        for attempt in range(self.max_retries + 1):
            try:
                return self._call(task, prompt, jpeg)
            except RetryableError as e:
                if attempt == self.max_retries:
                    status = 504 if e.status == 504 else 503 if e.status == 429 else 502
                    raise ProviderError(f"{self.provider} failed after {attempt + 1} attempts: {e}", status,
                                        e.retry_after) from None
                wait = e.retry_after if e.retry_after is not None else min(MAX_BACKOFF_S, 2.0 ** attempt)
                log.warning("%s: %s; retrying in %.1fs (attempt %d of %d)", self.provider, e, wait, attempt + 2,
                            self.max_retries + 1)
                time.sleep(min(wait, MAX_BACKOFF_S))
        raise AssertionError("unreachable")

    def ask(self, task: str, prompt: str, jpeg: bytes, usage: Usage) -> BaseModel:
        """The validated answer to one task; an invalid answer is asked once more, then ProviderError (502)."""
        for attempt in (1, 2):
            raw, tokens_in, tokens_out = self._call_with_retries(task, prompt, jpeg)
            usage.input_tokens += tokens_in
            usage.output_tokens += tokens_out
            usage.calls += 1
            try:
                return parse_answer(task, raw)
            except ValueError as e:
                log.warning("%s (%s) gave an invalid %s answer (attempt %d): %s; answer: %r", self.provider,
                            self.model, task, attempt, e, raw[:LOGGED_ANSWER_CHARS])
                if attempt == 2:
                    raise ProviderError(f"{self.provider} ({self.model}) answered the {task} task twice with invalid "
                                        f"JSON: {e}. The raw answer is in the service log; try another model or "
                                        "adjust the prompt (ANALYSIS_PROMPTS_DIR)") from None
        raise AssertionError("unreachable")

    def analyse(self, image: Image.Image, tasks: list[str], prompt: str | None = None) -> Analysis:
        """The analysis of an RGB image by the provider (one call per task; boxes in the original's pixels).

        Raises:
            ProviderError: the provider failed or answered invalid JSON twice.
        """
        t0 = time.perf_counter()
        jpeg, scale, (sent_w, sent_h) = encode_for_sending(image)
        usage, timings, answers = Usage(), {}, {}
        for task in tasks:
            t = time.perf_counter()
            answers[task] = self.ask(task, self.prompts.for_task(task, sent_w, sent_h, prompt), jpeg, usage)
            timings[task] = round((time.perf_counter() - t) * 1000, 1)
        fields, warnings = to_analysis(answers, image.size, scale)
        return Analysis(image=ImageSize(width=image.width, height=image.height), provider=self.provider,
                        model=self.model, tasks=tasks, usage=usage, timings_ms=timings, warnings=warnings,
                        elapsed_ms=round((time.perf_counter() - t0) * 1000, 1), **fields)
