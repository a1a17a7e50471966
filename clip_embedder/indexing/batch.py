"""The records the indexing stages pass along: the files to index (`SourceFile`), their bytes (`RawImage`) and pixels
(`DecodedImage`), the `Batch` every stage fills, and what a batch or a run did (`BatchOutcome`, `IndexStats`,
`FileOutcome`). The stages are listed in `clip_embedder.indexing.stages`."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clip_embedder.db.records import ImageRow, ItemRecord, ItemRow
from clip_embedder.models.detector import Detection

STAGES = ("read", "plan", "decode", "detect", "crop", "tag", "ocr", "describe", "embed", "write")
MODEL_STAGES = ("detect", "tag", "ocr", "embed")  # the stages that run a model


@dataclass
class SourceFile:
    """One file to index.

    Attributes:
        path: an absolute path on this machine (`storage='file'`) or a key under STORAGE_ROOT
            (`storage='originals'`, an upload).
        file_name: what people see: the upload's name or the path relative to the indexed folder.
        split: dataset split (train / val / test) or None.
        data: the bytes when they are already in memory (a worker reading an original).
    """

    path: str
    file_name: str
    split: str | None = None
    storage: str = "file"
    data: bytes | None = None

    @classmethod
    def from_folder(cls, path: Path, root: Path | None = None, split: str | None = None) -> "SourceFile":
        """A file indexed where it lies; `file_name` is its path relative to `root` (or its name)."""
        path = Path(path).resolve()
        try:
            name = path.relative_to(Path(root).resolve()).as_posix() if root else path.name
        except ValueError:
            name = path.name
        return cls(str(path), name, split)


@dataclass
class RawImage:
    """A file's bytes and their sha256 (hex)."""

    source: SourceFile
    data: bytes
    sha256: str


@dataclass
class DecodedImage:
    """A decoded RGB image to detect; `replace_id` names the stored image whose objects it replaces."""

    source: SourceFile
    sha256: str
    image: Image.Image
    replace_id: int | None = None


@dataclass
class Batch:
    """What flows through the stages. Each stage fills its fields and adds its seconds to `timings`."""

    sources: list[SourceFile]
    raw: list[RawImage] = field(default_factory=list)
    # plan
    known: dict[str, int] = field(default_factory=dict)           # sha256 → stored image id
    redetect_ids: set[int] = field(default_factory=set)            # stored images to detect again
    missing: dict[str, list[ItemRecord]] = field(default_factory=dict)  # space → items lacking a vector
    reenrich: dict[int, list[ItemRecord]] = field(default_factory=dict)  # image id → its stored items
    to_decode: list[RawImage] = field(default_factory=list)
    # decode
    new: list[DecodedImage] = field(default_factory=list)          # to detect (new or re-detected)
    backfill: dict[int, Image.Image] = field(default_factory=dict)  # stored image id → image (missing spaces)
    reenrich_images: dict[int, Image.Image] = field(default_factory=dict)  # stored image id → image
    # detect / crop / tag / ocr / describe / embed / write
    detections: list[list[Detection]] = field(default_factory=list)
    rows: list[ImageRow] = field(default_factory=list)
    row_images: list[Image.Image] = field(default_factory=list)    # the decoded image of each row
    crops: list[tuple[ItemRow, Image.Image]] = field(default_factory=list)
    features: np.ndarray | None = None                               # MobileNet features of `crops`, uint8
    extra_crops: dict[str, list[tuple[int, Image.Image, str]]] = field(default_factory=dict)
    extra_vectors: dict[str, list[tuple[int, np.ndarray]]] = field(default_factory=dict)
    inserted: list[int] = field(default_factory=list)
    # bookkeeping
    skipped: int = 0
    failed: list[tuple[SourceFile, str]] = field(default_factory=list)
    objects: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - t


@dataclass
class BatchOutcome:
    """What one written batch did, without its pixels: small enough to send back from another process
    (the Ray runner's actors return one per batch). `timings` maps stages to wall seconds."""

    seen: int = 0
    indexed: int = 0
    skipped: int = 0
    updated: int = 0
    redetected: int = 0
    reenriched: int = 0
    objects: int = 0
    errors: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # (path, sha256, not stored when planned) of every file read: lets a runner that commits batches out of order
    # settle which path a photo with several copies is recorded under
    hashes: list[tuple[str, str, bool]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        """Files that could not be indexed (one error each)."""
        return len(self.errors)

    @classmethod
    def of(cls, batch: Batch) -> "BatchOutcome":
        """The outcome of a batch that went through every stage, the write included."""
        return cls(seen=len(batch.sources), indexed=len(batch.inserted), skipped=batch.skipped,
                   updated=len(batch.backfill), redetected=sum(1 for d in batch.new if d.replace_id is not None),
                   reenriched=len(batch.reenrich_images), objects=batch.objects,
                   errors=[why for _, why in batch.failed], timings=dict(batch.timings),
                   hashes=[(r.source.path, r.sha256, r.sha256 not in batch.known) for r in batch.raw])


#: the counters of a `BatchOutcome` that a run sums
COUNTS = ("seen", "indexed", "skipped", "updated", "redetected", "reenriched", "objects")


@dataclass
class IndexStats(BatchOutcome):
    """What one indexing run did: its batches' outcomes summed (`timings`: each stage of `STAGES` to wall seconds
    summed over the batches, plus the runner's own entries), and the run's wall `seconds`."""

    seconds: float = 0.0

    def add(self, batch: Batch | BatchOutcome) -> None:
        """Count one batch's outcome (its hashes are not kept)."""
        o = batch if isinstance(batch, BatchOutcome) else BatchOutcome.of(batch)
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(o, name))
        self.errors += o.errors
        for stage, s in o.timings.items():
            self.timings[stage] = self.timings.get(stage, 0.0) + s

    def summary(self) -> str:
        """One line: images, objects, seconds, images/s, seconds per stage, and the share of wall time the model
        stages (detect, tag, ocr, embed) kept a model busy (above 100 % when several actors ran at once)."""
        rate = self.seen / self.seconds if self.seconds else 0.0
        stages = " ".join(f"{s}={self.timings.get(s, 0.0):.2f}s" for s in STAGES)
        busy = sum(self.timings.get(s, 0.0) for s in MODEL_STAGES) / self.seconds if self.seconds else 0.0
        return (f"images={self.seen} indexed={self.indexed} skipped={self.skipped} "
                f"updated={self.updated} redetected={self.redetected} "
                f"reenriched={self.reenriched} failed={self.failed} "
                f"objects={self.objects} "
                f"seconds={self.seconds:.2f} images/s={rate:.2f} | {stages} | models busy {busy:.0%} of the wall time")


@dataclass
class FileOutcome:
    """What happened to one file of a micro-batch: its sha256 (None when unreadable), the reason it
    failed (None on success), its objects written now, and how many files shared its batch."""

    sha256: str | None
    error: str | None
    objects: int
    batch_size: int
