"""The analysis schema: what `POST /api/analyze` answers and what is stored per image, whoever produced it (the local
models or a hosted vision-language model).

Every box is `bbox_xyxy`: [x1, y1, x2, y2] in pixels of the original image, origin at its top-left corner, x to the
right, y down, x1 <= x2 and y1 <= y2, clipped to the image.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

BBOX_DOC = "[x1, y1, x2, y2] pixels of the original image; origin top-left, y down"
TASKS = ("describe", "sensitive", "labels")
ReasonCategory = Literal["face", "person", "personal_data", "nudity", "other"]
LabelSource = Literal["detector", "tagger", "face", "nudity", "text", "provider"]
BBox = tuple[float, float, float, float]


class ImageSize(BaseModel):
    """The analysed image's size in pixels (after EXIF rotation)."""

    width: int = Field(ge=1)
    height: int = Field(ge=1)


class Reason(BaseModel):
    """Why a photo is (or might be) sensitive: what was found, how sure (0..1), the evidence in words and, where it
    has one, its box."""

    category: ReasonCategory
    score: float = Field(ge=0, le=1)
    evidence: str
    bbox_xyxy: BBox | None = Field(None, description=BBOX_DOC)


class Sensitive(BaseModel):
    """The verdict: `true` when any reason is sure enough (an identifiable face, personal data in the text read, or
    nudity above its floor); `score` is the highest reason's score (0 with none)."""

    verdict: bool
    score: float = Field(ge=0, le=1)
    reasons: list[Reason] = Field(default_factory=list)


class Label(BaseModel):
    """One thing seen, with its box (a whole-image label, such as an ImageNet tag, has the whole image's box)."""

    label: str
    score: float = Field(ge=0, le=1)
    bbox_xyxy: BBox = Field(description=BBOX_DOC)
    source: LabelSource


class TextLine(BaseModel):
    """One line of text read in the photo, with its box (None when a provider read it without one)."""

    text: str
    confidence: float | None = Field(None, ge=0, le=1)
    bbox_xyxy: BBox | None = Field(None, description=BBOX_DOC)


class Usage(BaseModel):
    """Tokens a hosted provider billed for this analysis (all its calls together)."""

    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0


class Analysis(BaseModel):
    """What a photo holds: a description, a sensitive-content verdict with reasons, labels with boxes, the text read.

    `provider` is `local` (this service's own models) or the hosted one; `model` names the models or the hosted
    model; `tasks` the tasks that ran (the others' fields are empty); `elapsed_ms` the wall time."""

    model_config = ConfigDict(json_schema_extra={"description": "Boxes: " + BBOX_DOC})

    image: ImageSize
    description: str = ""
    sensitive: Sensitive | None = None
    labels: list[Label] = Field(default_factory=list)
    text: list[TextLine] = Field(default_factory=list)
    provider: str
    model: str
    tasks: list[str] = Field(default_factory=lambda: list(TASKS))
    elapsed_ms: float = 0.0
    timings_ms: dict[str, float] = Field(default_factory=dict, description="per analyser / provider call")
    usage: Usage | None = None
    warnings: list[str] = Field(default_factory=list)


def parse_tasks(value: str | list[str] | None) -> list[str]:
    """`tasks=describe,sensitive,labels` (any subset, comma separated or repeated; None or empty = all three), in
    their canonical order.

    Raises:
        ValueError: an unknown task (the message lists the known ones).
    """
    parts = value if isinstance(value, list) else [value or ""]
    names = {t.strip().lower() for p in parts for t in p.split(",") if t.strip()}
    unknown = sorted(names - set(TASKS))
    if unknown:
        raise ValueError(f"unknown analysis task(s) {unknown}; choose from {', '.join(TASKS)}")
    return [t for t in TASKS if t in names] or list(TASKS)


def clip_box(box: Any, width: int, height: int) -> BBox | None:
    """A box as xyxy pixels clipped to a `width` × `height` image, from [x1, y1, x2, y2] (corners in any order) or the
    four-corner form `{TopLeft, TopRight, BottomRight, BottomLeft: {x, y}}` (Amazon Rekognition / Textract style,
    either pixels or, when every coordinate is within 0..1, fractions of the image).

    Returns None for a box with no area inside the image.

    Raises:
        ValueError: not a box in either form.
    """
    if isinstance(box, dict):
        try:
            xs = [float(box[k]["x"] if "x" in box[k] else box[k]["X"]) for k in ("TopLeft", "TopRight", "BottomRight",
                                                                            "BottomLeft")]
            ys = [float(box[k]["y"] if "y" in box[k] else box[k]["Y"]) for k in ("TopLeft", "TopRight", "BottomRight",
                                                                            "BottomLeft")]
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a four-corner box: {str(box)[:200]}") from e
        if all(0 <= v <= 1 for v in xs + ys):
            xs, ys = [x * width for x in xs], [y * height for y in ys]
        x1, y1, x2, y2 = min(xs), min(ys), max(xs), max(ys)
    else:
        try:
            x1, y1, x2, y2 = (float(v) for v in box)
        except (TypeError, ValueError) as e:
            raise ValueError(f"not an [x1, y1, x2, y2] box: {str(box)[:200]}") from e
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return (round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1))


def iou(a: BBox, b: BBox) -> float:
    """Intersection over union of two xyxy boxes (0 when they do not overlap)."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
