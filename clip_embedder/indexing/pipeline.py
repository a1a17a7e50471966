"""The runners that drive the indexing stages (`clip_embedder.indexing.stages`) over batches: `Indexer` (the CLI's
sequential batches, and `index_batch` for every other runner) and `MicroBatcher` (the queue worker's jobs in hand,
batched). The Ray runner (`clip_embedder.indexing.ray_runner`) calls `Indexer.index_batch` on its actors."""
from __future__ import annotations

import copy
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from tqdm.auto import tqdm

from clip_embedder.db.store import Store
from clip_embedder.indexing.batch import Batch, FileOutcome, IndexStats, SourceFile
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.stages import (
    DESCRIPTION_FORMAT,
    crop_stage,
    decode_stage,
    describe_stage,
    detect_stage,
    embed_stage,
    ocr_stage,
    plan_stage,
    read_stage,
    tag_stage,
    write_stage,
)
from clip_embedder.models.detector import Detector
from clip_embedder.models.embedders import Embedder
from clip_embedder.models.mobilenet import MobileNetEmbedder
from clip_embedder.models.ocr import OcrEngine
from clip_embedder.models.tagger import ImageNetTagger


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
        #: the enrichment signature stamped on the images this indexer writes
        self.enrichment = (f"{DESCRIPTION_FORMAT};tags={tagger.signature if tagger else 'off'};"
                           f"ocr={ocr.signature if ocr else 'off'}")
        #: whether stored images enriched under another signature are re-enriched (False: left to a follow-up job)
        self.reenrich = True
        #: whether files not stored yet are skipped instead of indexed (the follow-up enrichment jobs' indexer)
        self.only_stored = False

    def deferring_enrichments(self) -> "Indexer":
        """This indexer without its follow-up enrichments (OCR), sharing its models: new images are written
        searchable at once (objects, tags, vectors, description), stamped `ocr=off`; stored images are left as they
        are. Their enrichment is the job of this indexer itself (`needs_enrichment`, then `index_batch`)."""
        twin = copy.copy(self)
        twin.ocr = None
        twin.reenrich = False
        twin.enrichment = self.enrichment.rsplit(";ocr=", 1)[0] + ";ocr=off"
        return twin

    def enriching_only(self) -> "Indexer":
        """This indexer for follow-up enrichment jobs, sharing its models: stored images are re-enriched, a file
        whose image is not stored (deleted since the job was queued) is skipped, never indexed again."""
        twin = copy.copy(self)
        twin.only_stored = True
        return twin

    def needs_enrichment(self, enrichment: str | None) -> bool:
        """Whether an image stamped `enrichment` lacks what this indexer adds after the fact (OCR on, another
        signature)."""
        return self.ocr is not None and enrichment != self.enrichment

    @classmethod
    def from_settings(cls, settings, store: Store, detector: Detector, embedders: dict[str, Embedder], *,
                      redetect: bool = False) -> "Indexer":
        """The indexer the settings describe: crop policy, size caps, TAGGER, OCR (engines loaded now, so a
        missing model or program fails here with its message, not in the middle of a run).

        Raises:
            FileNotFoundError / RuntimeError: the tagger's files or the OCR engine are missing.
        """
        from clip_embedder.models.embedders import create_embedder  # noqa: PLC0415
        from clip_embedder.models.ocr import create_ocr  # noqa: PLC0415
        from clip_embedder.models.tagger import create_tagger  # noqa: PLC0415

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
                   enrichment=self.enrichment if self.reenrich else None, only_stored=self.only_stored)
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


