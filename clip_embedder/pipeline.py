"""The indexing pipeline: read → plan → decode → detect → crop → tag → ocr → describe → embed → write.

Shaped after clip-retrieval's runner (reader → mapper → writer): each stage is a function that takes
a `Batch`, fills its own fields and records its own wall time in `batch.timings`. Every runner
drives the same stage functions through `Indexer.index_batch`: the CLI (`Indexer.run`, sequential
batches), the queue worker (`clip_embedder.worker`: one job per image, the jobs in hand batched by
`MicroBatcher`) and the Ray runner (`clip_embedder.ray_runner`: actors across machines, one `index_batch` per batch).

| stage    | in → out                                                                              |
|----------|---------------------------------------------------------------------------------------|
| read     | `SourceFile`s → `RawImage`s (bytes + sha256); a file over the byte cap fails here      |
| plan     | what is new, what is re-detected (another detector), what only lacks a space (back-fill),  |
|          | what was tagged / OCR'd with another configuration (re-enriched: only changed items re-embedded) |
| decode   | bytes → RGB images (pixel cap, truncation, format checks)                             |
| detect   | new images → YOLOv5 detections                                                        |
| crop     | detections → items (whole image + crops passing the crop policy) and their crops      |
| tag      | crops → MobileNet features (kept for the mobilenet space) → ImageNet tags per item     |
| ocr      | whole images → lines of text (boxes, confidence)                                       |
| describe | label + tags (+ OCR text for the whole image) → each item's description and keywords  |
| embed    | crops / descriptions → vectors in every active space                                  |
| write    | one transaction per batch (a crash leaves nothing half-written), NOTIFY on commit     |
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from clip_embedder.crops import CropPolicy
from clip_embedder.detector import Detection, Detector
from clip_embedder.embedders import Embedder, MobileNetEmbedder, describe_image, describe_object
from clip_embedder.images import ImageError, decode_image, sha256_bytes
from clip_embedder.ocr import OcrEngine, lexical_text
from clip_embedder.store import ImageRow, ItemRecord, ItemRow, Store
from clip_embedder.tagger import ImageNetTagger, label_words

#: the version of the description / keyword format (part of the enrichment signature: a change re-describes)
DESCRIPTION_FORMAT = "d2"

log = logging.getLogger(__name__)

STAGES = ("read", "plan", "decode", "detect", "crop", "tag", "ocr", "describe", "embed", "write")
MODEL_STAGES = ("detect", "tag", "ocr", "embed")  # the stages that run a model


# --- records ------------------------------------------------------------------------------------
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


# --- stages -------------------------------------------------------------------------------------
def read_stage(batch: Batch, *, max_bytes: int) -> Batch:
    """Read each source's bytes (refusing a file over `max_bytes` before reading it) and hash them."""
    with batch.timed("read"):
        for src in batch.sources:
            try:
                if src.data is not None:
                    data = src.data
                    if len(data) > max_bytes:
                        raise OSError(f"{len(data):,} bytes is over the {max_bytes:,}-byte cap (INDEX_MAX_BYTES)")
                else:
                    size = Path(src.path).stat().st_size
                    if size > max_bytes:  # refuse before reading it into memory
                        raise OSError(f"{size:,} bytes is over the {max_bytes:,}-byte cap (INDEX_MAX_BYTES)")
                    data = Path(src.path).read_bytes()
            except OSError as e:
                batch.failed.append((src, f"{src.file_name}: {e}"))
                continue
            batch.raw.append(RawImage(src, data, sha256_bytes(data)))
    return batch


def plan_stage(batch: Batch, store: Store, *, spaces: Iterable[str], detector_sha256: str,
               redetect: bool, enrichment: str | None = None) -> Batch:
    """Decide per file: skip (stored and complete, or a duplicate in this batch), index (new), detect again
    (stored by another detector, when `redetect`), back-fill (stored but lacking a vector in a space), or
    re-enrich (tagged / OCR'd / described under another `enrichment` signature)."""
    with batch.timed("plan"):
        batch.known = store.images_by_sha([r.sha256 for r in batch.raw])
        batch.redetect_ids = (store.detected_by_other(list(batch.known.values()), detector_sha256)
                              if redetect else set())
        keep = [i for i in batch.known.values() if i not in batch.redetect_ids]
        batch.missing = {s: store.items_missing_space(keep, s) for s in spaces}
        if enrichment is not None:
            batch.reenrich = store.items_of(sorted(store.enriched_otherwise(keep, enrichment)))
        update_ids = ({r.image_id for rows in batch.missing.values() for r in rows} | batch.redetect_ids
                      | set(batch.reenrich))
        seen: set[str] = set()
        for raw in batch.raw:
            if (raw.sha256 in batch.known and batch.known[raw.sha256] not in update_ids) or raw.sha256 in seen:
                batch.skipped += 1
                continue
            seen.add(raw.sha256)
            batch.to_decode.append(raw)
    return batch


def decode_stage(batch: Batch, *, max_bytes: int, max_pixels: int) -> Batch:
    """Decode the planned files (EXIF orientation applied); a file that is not a usable image fails."""
    with batch.timed("decode"):
        lacking = {r.image_id for rows in batch.missing.values() for r in rows}  # images with items to back-fill
        for raw in batch.to_decode:
            try:
                img = decode_image(raw.data, max_bytes=max_bytes, max_pixels=max_pixels, name=raw.source.file_name,
                                   settings=("INDEX_MAX_BYTES", "INDEX_MAX_PIXELS"))
            except ImageError as e:
                batch.failed.append((raw.source, str(e)))
                log.debug("skipping %s", e)
                continue
            image_id = batch.known.get(raw.sha256)
            if image_id is None:
                batch.new.append(DecodedImage(raw.source, raw.sha256, img))
            elif image_id in batch.redetect_ids:
                batch.new.append(DecodedImage(raw.source, raw.sha256, img, replace_id=image_id))
            else:
                if image_id in batch.reenrich:
                    batch.reenrich_images[image_id] = img
                if image_id in lacking:
                    batch.backfill[image_id] = img
    return batch


def detect_stage(batch: Batch, detector: Detector) -> Batch:
    """Detect objects in the new and re-detected images, all in one batched forward."""
    with batch.timed("detect"):
        batch.detections = detector.detect([d.image for d in batch.new]) if batch.new else []
    return batch


def crop_stage(batch: Batch, policy: CropPolicy, *, detector_sha256: str, enrichment: str | None = None) -> Batch:
    """Build the rows to write: per image its whole-image item and one item per detection kept by the
    crop policy, with the crops to tag and embed; the stored items of re-enriched images with their crops;
    and the crops of stored items lacking a space. Descriptions are written later (describe stage)."""
    with batch.timed("crop"):
        for d, dets in zip(batch.new, batch.detections):
            img, w, h = d.image, *d.image.size
            row = ImageRow(sha256=d.sha256, path=d.source.path, width=w, height=h, split=d.source.split,
                           description="", detector_sha256=detector_sha256, replace_id=d.replace_id,
                           file_name=d.source.file_name, storage=d.source.storage, enrichment=enrichment)
            whole = ItemRow("image", None, None, (0.0, 0.0, float(w), float(h)), (0, 0, w, h), "")
            row.items.append(whole)
            batch.crops.append((whole, img))
            for det in dets:
                box = policy.crop_box(det.bbox, w, h)
                if box is None:
                    continue
                item = ItemRow("object", det.label, det.score, det.bbox, box, "")
                row.items.append(item)
                batch.crops.append((item, img.crop(box)))
                batch.objects += 1
            batch.rows.append(row)
            batch.row_images.append(img)
        for image_id, img in batch.reenrich_images.items():
            stored = batch.reenrich[image_id]
            first = stored[0]
            row = ImageRow(sha256=first.sha256, path=first.path, width=first.width, height=first.height, split=None,
                           description="", detector_sha256=None, update_id=image_id, enrichment=enrichment)
            for r in stored:
                item = ItemRow(r.kind, r.label, r.score, r.bbox, r.crop_box, "", item_id=r.id,
                               old_description=r.description)
                row.items.append(item)
                batch.crops.append((item, img if r.kind == "image" else img.crop(r.crop_box)))
            batch.rows.append(row)
            batch.row_images.append(img)
        for space, items in batch.missing.items():
            batch.extra_crops[space] = [(r.id, batch.backfill[r.image_id].crop(r.crop_box), r.description)
                                        for r in items if r.image_id in batch.backfill]
    return batch


def tag_stage(batch: Batch, tagger: ImageNetTagger | None, extractor: MobileNetEmbedder | None) -> Batch:
    """MobileNet features of every crop (kept in `batch.features`: the mobilenet space reuses them), then
    the ImageNet tags of each item from those features."""
    with batch.timed("tag"):
        if extractor is not None and batch.crops:
            batch.features = extractor.features([c for _, c in batch.crops])
        if tagger is not None and batch.features is not None:
            for (item, _), tags in zip(batch.crops, tagger.tag(batch.features)):
                item.tags = tags
    return batch


def ocr_stage(batch: Batch, ocr: OcrEngine | None) -> Batch:
    """Read the text in each new or re-enriched whole image."""
    with batch.timed("ocr"):
        if ocr is not None:
            for row, img in zip(batch.rows, batch.row_images):
                row.ocr, row.ocr_engine = ocr.read(img), ocr.name
    return batch


def describe_stage(batch: Batch, tagger: ImageNetTagger | None) -> Batch:
    """Each item's description (the description spaces' input) and keywords (its lexical document): the
    detected label and its synonyms, the ImageNet tags with theirs and their hypernyms, and for the whole
    image every object's label plus the OCR text."""
    def sure(tag) -> bool:
        return tagger is not None and tag.score >= tagger.confident_score

    def words(tags, strong: bool) -> list[str]:
        if tagger is None:
            return []
        return [tagger.words(t.label) for t in tags if sure(t) == strong]

    with batch.timed("describe"):
        for row in batch.rows:
            objects = [it for it in row.items if it.kind == "object"]
            for it in objects:
                label = it.label or ""
                # a crop's description names only its sure tags: less sure ones on small crops are mostly noise
                # (they would also make every crop's description distinct, and the text space embeds each once)
                it.description = describe_object(label, [t.label for t in it.tags if sure(t)])
                it.keywords = " ".join([label_words(label), *words(it.tags, True)])
                it.keywords_weak = " ".join(words(it.tags, False))
            whole = next(it for it in row.items if it.kind == "image")
            labels = [it.label or "" for it in objects]
            whole.description = row.description = describe_image(labels, [t.label for t in whole.tags], row.ocr_text)
            whole.keywords = " ".join([*(label_words(x) for x in dict.fromkeys(labels)), *words(whole.tags, True),
                                       lexical_text(row.ocr_text)])
            whole.keywords_weak = " ".join(words(whole.tags, False))
    return batch


def embed_stage(batch: Batch, embedders: dict[str, Embedder]) -> Batch:
    """Embed every new crop (pixels) or description (description spaces) in every space; of re-enriched
    items only the descriptions that changed. The mobilenet space reuses the tag stage's features."""
    with batch.timed("embed"):
        for space, emb in embedders.items():
            extra = batch.extra_crops.get(space, [])
            by_text = emb.source == "description"
            todo = [k for k, (it, _) in enumerate(batch.crops)
                    if it.item_id is None or (by_text and it.description_changed)]
            vecs: np.ndarray | list = []
            ev: np.ndarray | list
            if todo and by_text:
                vecs = emb.embed_texts([batch.crops[k][0].description for k in todo])
            elif todo and isinstance(emb, MobileNetEmbedder) and batch.features is not None:
                vecs = emb.from_features(batch.features[todo])
            elif todo:
                vecs = emb.embed_images([batch.crops[k][1] for k in todo])
            ev = []
            if extra and by_text:
                ev = emb.embed_texts([d for _, _, d in extra])
            elif extra:
                ev = emb.embed_images([c for _, c, _ in extra])
            for k, v in zip(todo, vecs):
                batch.crops[k][0].vectors[space] = v
            if len(ev):
                batch.extra_vectors[space] = [(i, v) for (i, _, _), v in zip(extra, ev)]
    return batch


def write_stage(batch: Batch, store: Store) -> Batch:
    """Write the batch in one transaction (images, items, vectors, back-filled vectors)."""
    with batch.timed("write"):
        batch.inserted = store.write_batch(batch.rows, batch.extra_vectors)
    return batch


# --- runner -------------------------------------------------------------------------------------
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


class Indexer:
    """Drives the stages over batches. Re-running skips what is already there (by content sha256).

    `tagger` / `ocr` (None = off) add ImageNet tags and the text read in each photo; `extractor` is the
    MobileNet feature extractor the tagger reads (the mobilenet space's embedder when that space is active,
    so its features are computed once).
    """

    def __init__(self, store: Store, detector: Detector, embedders: dict[str, Embedder], policy: CropPolicy, *,
                 max_bytes: int, max_pixels: int, redetect: bool = False, tagger: ImageNetTagger | None = None,
                 ocr: OcrEngine | None = None, extractor: MobileNetEmbedder | None = None):
        """`redetect`: images indexed by another detector (e.g. before a new champion) are detected
        again and their objects replaced; otherwise an indexed image keeps its objects."""
        self.store, self.detector, self.embedders, self.policy = store, detector, embedders, policy
        self.max_bytes, self.max_pixels, self.redetect = max_bytes, max_pixels, redetect
        self.tagger, self.ocr = tagger, ocr
        mobilenet = embedders.get("mobilenet")
        self.extractor = extractor or (mobilenet if isinstance(mobilenet, MobileNetEmbedder) else None)
        if tagger is not None and self.extractor is None:
            raise ValueError("the ImageNet tagger needs the MobileNet feature extractor (MOBILENET_WEIGHTS)")
        self.enrichment = (f"{DESCRIPTION_FORMAT};tags={tagger.signature if tagger else 'off'};"
                           f"ocr={ocr.signature if ocr else 'off'}")

    @classmethod
    def from_settings(cls, settings, store: Store, detector: Detector, embedders: dict[str, Embedder], *,
                      redetect: bool = False) -> "Indexer":
        """The indexer the settings describe: crop policy, size caps, TAGGER, OCR (engines loaded now, so a
        missing model or program fails here with its message, not in the middle of a run).

        Raises:
            FileNotFoundError / RuntimeError: the tagger's files or the OCR engine are missing.
        """
        from clip_embedder.embedders import create_embedder  # noqa: PLC0415
        from clip_embedder.ocr import create_ocr  # noqa: PLC0415
        from clip_embedder.tagger import create_tagger  # noqa: PLC0415

        tagger = create_tagger(settings)
        extractor: MobileNetEmbedder | None = None  # None: the mobilenet space's embedder (see __init__)
        if tagger is not None:
            tagger.load()
            if not isinstance(embedders.get("mobilenet"), MobileNetEmbedder):
                own = create_embedder("mobilenet", settings)
                assert isinstance(own, MobileNetEmbedder)
                extractor = own
        ocr = create_ocr(settings)
        if ocr is not None:
            ocr.load()
        policy = CropPolicy(settings.crop_padding, settings.crop_min_side, settings.crop_max_aspect)
        return cls(store, detector, embedders, policy, max_bytes=settings.index_max_bytes,
                   max_pixels=settings.index_max_pixels, redetect=redetect, tagger=tagger, ocr=ocr,
                   extractor=extractor)

    def run(self, files: Iterable[SourceFile | tuple[Path, str | None]], *, batch_size: int = 16,
            progress: bool = True, total: int | None = None) -> IndexStats:
        """Index files in batches of `batch_size` (sequential runner with write-behind); returns the stats.

        Each batch is written (one transaction) by a writer thread while the next batch is read, detected,
        tagged and embedded; at most one write is in flight, and a failed write stops the run with its error.
        `files` are `SourceFile`s or `(path, split)` pairs. A file that is not a readable image is counted
        in `failed` and named in `errors`; the run goes on.
        """
        stats = IndexStats()
        t0 = time.perf_counter()
        sources = [f if isinstance(f, SourceFile) else SourceFile.from_folder(f[0], None, f[1]) for f in files]
        bar = tqdm(total=total or len(sources), unit="img", desc="indexing", disable=not progress)

        def done(batch: Batch, write: Future[Batch]) -> None:
            write.result()  # re-raises the write's error
            stats.add(batch)
            bar.update(len(batch.sources))
            bar.set_postfix(objects=stats.objects, failed=stats.failed)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="index-writer") as writer:
            pending: tuple[Batch, Future[Batch]] | None = None
            for i in range(0, len(sources), batch_size):
                batch = self.compute_batch(sources[i:i + batch_size])
                if pending is not None:
                    done(*pending)
                pending = (batch, writer.submit(write_stage, batch, self.store))
            if pending is not None:
                done(*pending)
        bar.close()
        stats.seconds = time.perf_counter() - t0
        return stats

    def compute_batch(self, sources: list[SourceFile]) -> Batch:
        """Every stage but the write on one batch of files: read, plan, decode, detect, crop, tag, ocr,
        describe, embed. (A batch planned while the previous one is still being written may plan again an
        image that batch adds; its write then skips it: images are unique by sha256.)"""
        batch = Batch(sources)
        sha = self.detector.weights_sha256
        read_stage(batch, max_bytes=self.max_bytes)
        plan_stage(batch, self.store, spaces=self.embedders, detector_sha256=sha, redetect=self.redetect,
                   enrichment=self.enrichment)
        decode_stage(batch, max_bytes=self.max_bytes, max_pixels=self.max_pixels)
        detect_stage(batch, self.detector)
        crop_stage(batch, self.policy, detector_sha256=sha, enrichment=self.enrichment)
        tag_stage(batch, self.tagger, self.extractor)
        ocr_stage(batch, self.ocr)
        describe_stage(batch, self.tagger)
        embed_stage(batch, self.embedders)
        return batch

    def index_batch(self, sources: list[SourceFile], stats: IndexStats | None = None) -> Batch:
        """Run every stage on one batch of files, the write included; add its outcome to `stats`; return it."""
        batch = write_stage(self.compute_batch(sources), self.store)
        if stats is not None:
            stats.add(batch)
        return batch


class MicroBatcher:
    """Runs the stages over whatever files are waiting, as one batch (the queue worker's runner).

    Job threads `submit` one file each and block on the result; one batching thread takes the first
    waiting file plus every other file waiting at that moment (up to `max_batch`) and runs
    `Indexer.index_batch` over them, so a backlog is detected and embedded in batches while a lone
    upload waits for nobody (behind a backlog it waits up to `gather_seconds` for the batch to fill).
    Each file's outcome is its own: a file that is not an image fails alone; an error of the whole
    batch (the database write) is raised in every job of that batch, and each job is retried.
    """

    def __init__(self, indexer: Indexer, max_batch: int = 16,
                 on_batch: Callable[[Batch], None] | None = None, gather_seconds: float = 0.1):
        self.indexer, self.max_batch, self.on_batch = indexer, max(1, max_batch), on_batch
        self.gather_seconds = gather_seconds
        self._queue: queue.Queue[tuple[SourceFile, Future[FileOutcome]]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="micro-batcher", daemon=True)
        self._thread.start()
        self.batches = 0
        self.files = 0

    def submit(self, source: SourceFile) -> FileOutcome:
        """Index one file with whatever else is waiting; block until its batch is written.

        Raises:
            Exception: whatever failed the whole batch (e.g. the database write).
        """
        fut: Future[FileOutcome] = Future()
        self._queue.put((source, fut))
        return fut.result()

    def _run(self) -> None:
        last = 1
        while True:
            waiting = [self._queue.get()]
            # behind a backlog (the last batch held several files) give the queue a moment to hand over the
            # next jobs, so batches stay full; an idle system's lone upload starts at once
            deadline = time.monotonic() + (self.gather_seconds if last > 1 else 0.0)
            while len(waiting) < self.max_batch:
                try:
                    waiting.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                                   if time.monotonic() < deadline else self._queue.get_nowait())
                except queue.Empty:
                    break
            last = len(waiting)
            try:
                batch = self.indexer.index_batch([s for s, _ in waiting])
            except Exception as e:  # the whole batch failed: every job sees it and is retried
                for _, fut in waiting:
                    fut.set_exception(e)
                continue
            self.batches += 1
            self.files += len(waiting)
            if self.on_batch is not None:
                self.on_batch(batch)
            failed = {id(src): why for src, why in batch.failed}
            raw = {id(r.source): r.sha256 for r in batch.raw}
            objects = {row.sha256: sum(1 for it in row.items if it.kind == "object") for row in batch.rows}
            for src, fut in waiting:
                sha = raw.get(id(src))
                fut.set_result(FileOutcome(sha256=sha, error=failed.get(id(src)), objects=objects.get(sha or "", 0),
                                           batch_size=len(waiting)))


@dataclass
class FileOutcome:
    """What happened to one file of a micro-batch: its sha256 (None when unreadable), the reason it
    failed (None on success), its objects written now, and how many files shared its batch."""

    sha256: str | None
    error: str | None
    objects: int
    batch_size: int
