"""The typed records of search: hits, the answers of image and text queries, and the error of a query the index
cannot serve. Boxes are xyxy pixels of the indexed image."""
from __future__ import annotations

from dataclasses import dataclass, field

from clip_embedder.models.detector import Detection
from clip_embedder.models.tagger import Tag


class QueryError(ValueError):
    """A query the index cannot serve (empty text, no usable space…). `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class Hit:
    """One search result: an indexed item (a whole image or an object crop) and how it was found.

    `score` is the fused RRF score; `similarity` the best cosine similarity over the spaces that
    found it; `spaces` maps space → {"rank": 1-based rank, "similarity": cosine}.
    """

    item_id: int
    image_id: int
    kind: str
    label: str | None
    detection_score: float | None
    bbox: tuple[float, float, float, float]
    score: float
    similarity: float
    spaces: dict[str, dict[str, float]] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the indexed image, pixels
    file_name: str = ""  # the upload's name or the path relative to the indexed folder
    tags: list[Tag] = field(default_factory=list)  # the item's ImageNet tags, best first
    weak: bool = False  # below every space's relevance floor and not matched lexically


@dataclass
class TextSearchResult:
    """A text query's answer: hits (one per image), the spaces used, warnings (e.g. nothing matched)."""

    hits: list[Hit]
    spaces: list[str]
    warnings: list[str]
    #: hits dropped for being below the relevance floors (shown with `include_weak`)
    hidden_weak: int = 0


@dataclass
class ObjectResult:
    """A detected object of the query image and its nearest indexed crops (empty when not cropped)."""

    detection: Detection
    neighbours: list[Hit]
    skipped: str | None = None


@dataclass
class ImageSearchResult:
    """An image query's answer. Sizes in pixels; `timings_ms` per stage (detect, embed, search)."""

    width: int
    height: int
    objects: list[ObjectResult]
    image_neighbours: list[Hit]
    spaces: list[str]
    warnings: list[str]
    timings_ms: dict[str, float]
