"""The indexing pipeline: read → detect → crop → embed → write, in batches, each stage timed.

Shaped after clip-retrieval's runner: the stages are methods of one `Indexer` with injected
parts (store, detector, embedders, crop policy), so a distributed runner can drive the same
`index_batch` over shards.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from PIL import Image
from tqdm.auto import tqdm

from clip_embedder.crops import CropPolicy
from clip_embedder.detector import Detector
from clip_embedder.embedders import Embedder, describe_detections, describe_object
from clip_embedder.images import ImageError, decode_image, sha256_bytes
from clip_embedder.store import ImageRow, ItemRow, Store

log = logging.getLogger(__name__)

STAGES = ("read", "detect", "crop", "embed", "write")


@dataclass
class IndexStats:
    """What one indexing run did. `stage_seconds` maps each stage of `STAGES` to wall seconds."""

    images_seen: int = 0
    images_indexed: int = 0
    images_skipped: int = 0
    images_updated: int = 0
    images_failed: int = 0
    images_redetected: int = 0
    objects: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: images, objects, seconds, images/s, seconds per stage."""
        rate = self.images_seen / self.seconds if self.seconds else 0.0
        stages = " ".join(f"{s}={self.stage_seconds.get(s, 0.0):.2f}s" for s in STAGES)
        return (f"images={self.images_seen} indexed={self.images_indexed} skipped={self.images_skipped} "
                f"updated={self.images_updated} redetected={self.images_redetected} failed={self.images_failed} "
                f"objects={self.objects} "
                f"seconds={self.seconds:.2f} images/s={rate:.2f} | {stages}")


class Indexer:
    """Indexes image files into the store. Re-running skips what is already there (by content sha256)."""

    def __init__(self, store: Store, detector: Detector, embedders: dict[str, Embedder], policy: CropPolicy, *,
                 max_bytes: int, max_pixels: int, redetect: bool = False):
        """`redetect`: images indexed by another detector (e.g. before a new champion) are detected
        again and their objects replaced; otherwise an indexed image keeps its objects."""
        self.store, self.detector, self.embedders, self.policy = store, detector, embedders, policy
        self.max_bytes, self.max_pixels, self.redetect = max_bytes, max_pixels, redetect

    def run(self, files: Iterable[tuple[Path, str | None]], *, batch_size: int = 16, progress: bool = True,
            total: int | None = None) -> IndexStats:
        """Index `(path, split)` pairs in batches of `batch_size`; returns the stats.

        A file that is not a readable image is counted in `images_failed` and named in `errors`;
        the run goes on. Each batch is written in one transaction.
        """
        stats = IndexStats()
        t0 = time.perf_counter()
        files = list(files)
        bar = tqdm(total=total or len(files), unit="img", desc="indexing", disable=not progress)
        for i in range(0, len(files), batch_size):
            batch = files[i:i + batch_size]
            self.index_batch(batch, stats)
            bar.update(len(batch))
            bar.set_postfix(objects=stats.objects, failed=stats.images_failed)
        bar.close()
        stats.seconds = time.perf_counter() - t0
        return stats

    def index_batch(self, batch: list[tuple[Path, str | None]], stats: IndexStats) -> None:
        """Run the five stages on one batch of files and update `stats`."""
        st = stats.stage_seconds
        # --- read --------------------------------------------------------------------------
        t = time.perf_counter()
        raw: list[tuple[Path, str | None, bytes, str]] = []
        for path, split in batch:
            stats.images_seen += 1
            try:
                size = Path(path).stat().st_size
                if size > self.max_bytes:  # refuse before reading it into memory
                    raise OSError(f"{size:,} bytes is over the {self.max_bytes:,}-byte cap (INDEX_MAX_BYTES)")
                data = Path(path).read_bytes()
            except OSError as e:
                stats.images_failed += 1
                stats.errors.append(f"{path}: {e}")
                continue
            raw.append((Path(path), split, data, sha256_bytes(data)))
        known = self.store.images_by_sha([r[3] for r in raw])
        redo = (self.store.detected_by_other(list(known.values()), self.detector.weights_sha256)
                if self.redetect else set())
        # existing images: find items that lack a vector in some active space
        keep = [i for i in known.values() if i not in redo]
        missing: dict[str, list[dict]] = {s: self.store.items_missing_space(keep, s) for s in self.embedders}
        update_ids = {row["image_id"] for rows in missing.values() for row in rows} | redo
        new: list[tuple[Path, str | None, str, Image.Image]] = []
        replace: dict[str, int] = {}  # sha → image id, for images detected again
        existing_images: dict[int, Image.Image] = {}
        seen_in_batch: set[str] = set()
        for path, split, data, sha in raw:
            if sha in known and known[sha] not in update_ids or sha in seen_in_batch:
                stats.images_skipped += 1
                continue
            seen_in_batch.add(sha)
            try:
                img = decode_image(data, max_bytes=self.max_bytes, max_pixels=self.max_pixels, name=str(path),
                                   settings=("INDEX_MAX_BYTES", "INDEX_MAX_PIXELS"))
            except ImageError as e:
                stats.images_failed += 1
                stats.errors.append(str(e))
                log.debug("skipping %s", e)
                continue
            if sha in known and known[sha] in redo:
                replace[sha] = known[sha]
                new.append((path, split, sha, img))
            elif sha in known:
                existing_images[known[sha]] = img
            else:
                new.append((path, split, sha, img))
        stats.images_updated += len(existing_images)
        st["read"] += time.perf_counter() - t

        # --- detect --------------------------------------------------------------------------
        t = time.perf_counter()
        detections = self.detector.detect([n[3] for n in new]) if new else []
        st["detect"] += time.perf_counter() - t

        # --- crop ----------------------------------------------------------------------------
        t = time.perf_counter()
        rows: list[ImageRow] = []
        crops: list[tuple[ItemRow, Image.Image]] = []
        for (path, split, sha, img), dets in zip(new, detections):
            w, h = img.size
            desc = describe_detections([d.label for d in dets])
            row = ImageRow(sha256=sha, path=str(path.resolve()), width=w, height=h, split=split, description=desc,
                           detector_sha256=self.detector.weights_sha256, replace_id=replace.get(sha))
            whole = ItemRow("image", None, None, (0.0, 0.0, float(w), float(h)), (0, 0, w, h), desc)
            row.items.append(whole)
            crops.append((whole, img))
            for d in dets:
                box = self.policy.crop_box(d.bbox, w, h)
                if box is None:
                    continue
                item = ItemRow("object", d.label, d.score, d.bbox, box, describe_object(d.label))
                row.items.append(item)
                crops.append((item, img.crop(box)))
                stats.objects += 1
            rows.append(row)
        extra_crops: dict[str, list[tuple[int, Image.Image, str]]] = {}
        for space, items in missing.items():
            extra_crops[space] = [
                (r["id"], existing_images[r["image_id"]].crop((r["crop_x1"], r["crop_y1"], r["crop_x2"], r["crop_y2"])),
                 r["description"]) for r in items if r["image_id"] in existing_images]
        st["crop"] += time.perf_counter() - t

        # --- embed ---------------------------------------------------------------------------
        t = time.perf_counter()
        extra_vectors: dict[str, list] = {}
        for space, emb in self.embedders.items():
            if emb.source == "description":
                vecs = emb.embed_texts([it.description for it, _ in crops]) if crops else []
                ev = emb.embed_texts([d for _, _, d in extra_crops[space]]) if extra_crops[space] else []
            else:
                vecs = emb.embed_images([c for _, c in crops]) if crops else []
                ev = emb.embed_images([c for _, c, _ in extra_crops[space]]) if extra_crops[space] else []
            for (item, _), v in zip(crops, vecs):
                item.vectors[space] = v
            if len(ev):
                extra_vectors[space] = [(i, v) for (i, _, _), v in zip(extra_crops[space], ev)]
        st["embed"] += time.perf_counter() - t

        # --- write ---------------------------------------------------------------------------
        t = time.perf_counter()
        inserted = self.store.write_batch(rows, extra_vectors)
        stats.images_indexed += len(inserted)
        stats.images_redetected += len(replace)
        st["write"] += time.perf_counter() - t
