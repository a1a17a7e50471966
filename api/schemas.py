"""Request and response models of the HTTP API (what Swagger at /docs shows)."""
from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

BBox = tuple[float, float, float, float]


class SpaceHit(BaseModel):
    """How one embedding space (or the lexical / OCR matcher) ranked a result."""

    rank: int = Field(description="1-based rank of this result in that space")
    similarity: float = Field(description="cosine similarity in that space (lexical: ts_rank_cd; ocr: 1)")


class TagInfo(BaseModel):
    """An ImageNet class given to an item by the tagger."""

    label: str = Field(description="the class's name, e.g. 'Labrador retriever'")
    score: float = Field(description="probability, 0..1")
    source: str = Field("imagenet", description="the tagger")


def tag_infos(tags) -> list[TagInfo]:
    """The response models of an item's `clip_embedder.models.tagger.Tag`s, in their order."""
    return [TagInfo(label=t.label, score=t.score, source=t.source) for t in tags]


class OcrLineInfo(BaseModel):
    """A line of text read in an image."""

    text: str
    confidence: float = Field(description="0..1")
    bbox: BBox = Field(description="xyxy pixels in the image")


class SearchHit(BaseModel):
    """One result: an indexed whole image or object crop."""

    item_id: int = Field(description="id of the indexed item (whole image or crop)")
    image_id: int
    kind: str = Field(description="'image' (whole image) or 'object' (a detected object's crop)")
    label: str | None = Field(None, description="detected class of an object item")
    detection_score: float | None = Field(None, description="detector confidence of an object item")
    bbox: BBox = Field(description="xyxy pixels in the indexed image (the full frame for a whole image)")
    image_width: int = Field(description="width of the indexed image, pixels (the frame of bbox)")
    image_height: int = Field(description="height of the indexed image, pixels")
    score: float = Field(description="reciprocal-rank-fusion score over the spaces that found it")
    similarity: float = Field(description="best cosine similarity over those spaces")
    spaces: dict[str, SpaceHit] = Field(description="which spaces found it, with rank and similarity ('lexical': "
                                                    "its keywords matched; 'ocr': a quoted phrase is in its text; "
                                                    "'count' / 'colour': the query's count or colour of a detected "
                                                    "class checked on its objects)")
    file_name: str = Field(description="the upload's name or the path relative to the indexed folder")
    tags: list[TagInfo] = Field(default_factory=list, description="the item's ImageNet tags, best first")
    weak: bool = Field(False, description="below every space's relevance floor and not matched lexically (only "
                                          "returned with include_weak)")
    image_url: str
    thumbnail_url: str
    crop_url: str


class QueryObject(BaseModel):
    """An object detected in the query image, with its nearest indexed crops."""

    label: str
    score: float
    bbox: BBox = Field(description="xyxy pixels in the query image")
    neighbours: list[SearchHit]
    skipped: str | None = Field(None, description="why no neighbours were searched (crop policy)")


class ImageSearchResponse(BaseModel):
    """Result of an image query: the query's objects with neighbours, and whole-image neighbours."""

    width: int
    height: int
    objects: list[QueryObject]
    image_neighbours: list[SearchHit] = Field(description="nearest indexed whole images")
    spaces: list[str] = Field(description="embedding spaces used")
    warnings: list[str]
    timings_ms: dict[str, float]


class TextSearchRequest(BaseModel):
    """A text query (the JSON body of POST /api/search_text). Strict: JSON types as the schema says them (`0` is
    not `false`, `"10"` is not `10`)."""

    model_config = ConfigDict(strict=True)

    query: str = Field(min_length=1, max_length=1000, examples=["handbag"])
    top_k: int = Field(10, ge=1, le=100)
    label: str | None = Field(None, max_length=200, description="only items detected with this class")
    spaces: list[str] | None = Field(None, max_length=8, description="restrict to these spaces (default: all)")
    include_weak: bool = Field(False, description="also return hits below the relevance floors, flagged weak")
    sensitive: Literal["exclude", "only"] | None = Field(
        None, description="content filter from the stored analyses: exclude = only images analysed as not sensitive, "
                          "only = only sensitive ones (images not analysed yet pass neither)")
    faces: bool = Field(False, description="only images whose stored analysis found a face")


class TextSearchResponse(BaseModel):
    """Images matching a text query, one hit per image, best first. An empty `results` with a warning means
    nothing in the index matches the query confidently."""

    query: str
    results: list[SearchHit]
    spaces: list[str]
    warnings: list[str]
    hidden_weak: int = Field(0, description="hits dropped for being below the relevance floors")
    took_ms: float


class ObjectInfo(BaseModel):
    """A detected object of an indexed image."""

    item_id: int
    label: str | None
    score: float | None
    bbox: BBox
    crop_url: str
    tags: list[TagInfo] = Field(default_factory=list, description="the crop's ImageNet tags, best first")


EnrichmentState = Literal["queued", "running", "done", "failed", "not run"]
Enrichments = dict[Literal["ocr", "analysis"], EnrichmentState]
ENRICHMENTS_DOC = ("what is read after the image is searchable, and where it stands: `ocr` (the text in it) is queued, "
                   "running, done, failed or not run (OCR off); `analysis` (ANALYZE=true: description, verdict, "
                   "labels) queued, running, done or failed; empty until the image is written")


class ImageInfo(BaseModel):
    """An indexed image and its detected objects."""

    id: int
    sha256: str
    file_name: str = Field(description="the upload's name or the path relative to the indexed folder")
    source: str = Field(description="'upload' (stored by the service) or 'folder' (indexed where it lies)")
    width: int
    height: int
    split: str | None
    description: str = Field(description="what the text space embeds: detected objects, tags, text read in it")
    tags: list[TagInfo] = Field(default_factory=list, description="the whole image's ImageNet tags, best first")
    ocr: list[OcrLineInfo] = Field(default_factory=list, description="text read in the image, top to bottom")
    objects: list[ObjectInfo]
    image_url: str
    thumbnail_url: str
    enrichments: Enrichments = Field(default_factory=dict, description=ENRICHMENTS_DOC)


class UploadLimits(BaseModel):
    """What one request may send (the page sizes its uploaders from these)."""

    max_upload_bytes: int = Field(description="bytes of one photo (MAX_UPLOAD_BYTES)")
    max_files_per_upload: int = Field(description="photos in one POST /api/images (MAX_FILES_PER_UPLOAD)")


class HealthResponse(BaseModel):
    """Service state: spaces, counts, detector and its source, refused spaces, labels, upload limits."""

    status: str
    counts: dict[str, int]
    spaces: dict[str, dict]
    refused: dict[str, str]
    relevance_floors: dict[str, float] = Field(
        default_factory=dict, description="cosine floor of a confident text hit per space (`text:short`: the text "
                                          "space's floor for a query naming a thing)")
    detector: dict = Field(description="weights, sha256, classes (count) and class_names (what it can detect), "
                                       "image size, device, MLflow source")
    labels: list[str]
    queue: dict[str, int] = Field(default_factory=dict, description="indexing jobs by status (todo = queued)")
    workers: int = Field(0, description="queue workers with a recent heartbeat (each worker process runs two: "
                                        "indexing and enrichment)")
    limits: UploadLimits | None = None


TaskStatus = Literal["queued", "running", "succeeded", "failed"]


class TaskPublic(BaseModel):
    """An ingest task: one uploaded or scanned file on its way into the index."""

    id: str
    batch: str
    status: TaskStatus
    file_name: str
    image_id: int | None = Field(None, description="the indexed image (set once it is searchable)")
    attempts: int = Field(description="indexing attempts so far (retries after errors or a dead worker)")
    error: str | None = Field(None, description="why it failed (or the last error before a retry)")
    sha256: str
    created_at: datetime
    updated_at: datetime
    enrichments: Enrichments = Field(default_factory=dict, description=ENRICHMENTS_DOC)
    kind: Literal["image", "receipt"] = Field("image", description="image: a photo to index; receipt: a receipt "
                                                                  "photo to read into the ledger")
    receipt_id: int | None = Field(None, description="the ledger's receipt (set once a receipt photo is read)")


class TaskBatch(BaseModel):
    """The tasks of one upload or scan (poll `GET /api/tasks?batch=…`)."""

    batch: str
    tasks: list[TaskPublic]
    counts: dict[str, int] = Field(description="tasks by status")


class ScanRequest(BaseModel):
    """A server folder to index (it must lie under one of SCAN_ROOTS)."""

    path: str = Field(min_length=1, max_length=4096, examples=["/photos/2024"])


class DeleteResponse(BaseModel):
    """What a delete removed."""

    image_id: int
    items_removed: int
    original_deleted: bool


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a message saying what to fix."""

    detail: str


#: the error answers a route may give, for its `responses=` (documented in Swagger)
ERRORS: dict[int | str, dict] = {c: {"model": ErrorResponse}
                                 for c in (400, 401, 403, 404, 409, 410, 413, 415, 422, 503)}
