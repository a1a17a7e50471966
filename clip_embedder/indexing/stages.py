"""The indexing pipeline: read → plan → decode → detect → crop → tag → ocr → describe → embed → write.

Shaped after clip-retrieval's runner (reader → mapper → writer): each stage is a function that takes
a `Batch`, fills its own fields and records its own wall time in `batch.timings`. Every runner
drives the same stage functions through `Indexer.index_batch`: the CLI (`Indexer.run`, sequential
batches), the queue worker (`clip_embedder.intake.worker`: one job per image, the jobs in hand batched by
`MicroBatcher`) and the Ray runner (`clip_embedder.indexing.ray_runner`: actors across machines, one `index_batch`
per batch).

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
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from clip_embedder.db.records import ImageRow, ItemRow
from clip_embedder.db.store import Store
from clip_embedder.images import ImageError, decode_image, sha256_bytes
from clip_embedder.indexing.batch import Batch, DecodedImage, RawImage
from clip_embedder.indexing.colours import crop_colours
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.describe import describe_image, describe_object
from clip_embedder.models.detector import Detector
from clip_embedder.models.embedders import Embedder
from clip_embedder.models.mobilenet import MobileNetEmbedder
from clip_embedder.models.ocr import OcrEngine, lexical_text
from clip_embedder.models.tagger import ImageNetTagger, label_words

#: the version of the description / keyword format (part of the enrichment signature: a change re-describes)
DESCRIPTION_FORMAT = "d3"  # d3: names of several words as one keyword (name_words); objects' colours

log = logging.getLogger(__name__)


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
               redetect: bool, enrichment: str | None = None, only_stored: bool = False) -> Batch:
    """Decide per file: skip (stored and complete, or a duplicate in this batch), index (new), detect again
    (stored by another detector, when `redetect`), back-fill (stored but lacking a vector in a space), or
    re-enrich (tagged / OCR'd / described under another `enrichment` signature). `only_stored`: a file not stored
    is skipped, never indexed (an enrichment job whose image was deleted meanwhile)."""
    with batch.timed("plan"):
        batch.known = store.images.ids_by_sha([r.sha256 for r in batch.raw])
        batch.redetect_ids = (store.images.detected_by_other(list(batch.known.values()), detector_sha256)
                              if redetect else set())
        keep = [i for i in batch.known.values() if i not in batch.redetect_ids]
        batch.missing = {s: store.vectors.items_missing(keep, s) for s in spaces}
        if enrichment is not None:
            batch.reenrich = store.items.of_images(sorted(store.images.enriched_otherwise(keep, enrichment)))
        update_ids = ({r.image_id for rows in batch.missing.values() for r in rows} | batch.redetect_ids
                      | set(batch.reenrich))
        seen: set[str] = set()
        for raw in batch.raw:
            if ((raw.sha256 in batch.known and batch.known[raw.sha256] not in update_ids) or raw.sha256 in seen
                    or (only_stored and raw.sha256 not in batch.known)):
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
        crop_of = {id(item): crop for item, crop in batch.crops}
        for row in batch.rows:
            objects = [it for it in row.items if it.kind == "object"]
            for it in objects:
                label = it.label or ""
                # a crop's description names only its sure tags: less sure ones on small crops are mostly noise
                # (they would also make every crop's description distinct, and the text space embeds each once)
                it.description = describe_object(label, [t.label for t in it.tags if sure(t)])
                # its colour names are keywords too: "a red car" is checked on them (the `colour` signal)
                colours = crop_colours(crop_of[id(it)]) if id(it) in crop_of else []
                it.keywords = " ".join([label_words(label), *colours, *words(it.tags, True)])
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
        batch.inserted = store.batches.write(batch.rows, batch.extra_vectors)
    return batch

