"""Bring your own photos: validate an upload, store its original once, queue one job per new image.

Used by the API's routes (`POST /api/images`, `POST /api/collections/scan`, `DELETE /api/images/{id}`).
The same bytes twice are one image: a file already indexed gets a task that is `succeeded` at once
with its image id and no job; a file already queued or running shares that job.
"""
from __future__ import annotations

import io
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import procrastinate
from PIL import Image

from clip_embedder.config import Settings
from clip_embedder.db.records import Removed, TaskRecord
from clip_embedder.db.store import Store
from clip_embedder.images import decode_image, file_sha256, list_images, sha256_bytes
from clip_embedder.indexing.batch import SourceFile
from clip_embedder.intake.originals import OriginalsStore, original_key
from clip_embedder.intake.queue import (
    ENRICH_QUEUE,
    QUEUE,
    RECEIPT_LOCK_PREFIX,
    RECEIPT_TASK,
    IndexJob,
    defer_enrich_job_sync,
    defer_index_job,
    sync_app,
)

log = logging.getLogger(__name__)


class QueueFullError(RuntimeError):
    """The queue holds QUEUE_MAX_DEPTH jobs or more: come back later (`retry_after` seconds)."""

    def __init__(self, message: str, retry_after: int = 30):
        super().__init__(message)
        self.retry_after = retry_after


class ScanPathError(ValueError):
    """A scan path that names no folder this machine can look up (an unknown `~user`, a symlink loop, a name over
    the file system's limits, a NUL character): the API answers 422."""


class ScanRefusedError(PermissionError):
    """A folder outside SCAN_ROOTS (or scanning is off)."""


def _shown(folder: str | Path, limit: int = 200) -> str:
    """A path as an error message shows it: cut at `limit` characters."""
    text = str(folder)
    return text if len(text) <= limit else text[:limit] + f"…(+{len(text) - limit} chars)"


def resolve_folder(folder: str | Path) -> Path:
    """`folder` with `~` expanded and symlinks resolved (the folder need not exist).

    Raises:
        ScanPathError: a NUL character, an unknown `~user` or no home directory, a symlink loop, or a path the
            operating system refuses to look up (too long, say).
    """
    if "\x00" in str(folder):
        raise ScanPathError("a folder path cannot contain a NUL character")
    try:
        return Path(folder).expanduser().resolve()
    except RuntimeError as e:  # pathlib: "Could not determine home directory.", "Symlink loop from …"
        raise ScanPathError(f"{_shown(folder)} cannot be looked up: {e}") from None
    except (OSError, ValueError) as e:
        raise ScanPathError(f"{_shown(folder)} cannot be looked up: {getattr(e, 'strerror', None) or e}") from None


def _inside(path: Path, root: Path) -> bool:
    """Whether `path`, symlinks resolved, lies under `root`; False for a path that cannot be resolved (a loop)."""
    try:
        return root in path.resolve().parents
    except (RuntimeError, OSError):
        return False


@dataclass
class Upload:
    """A validated upload: its bytes, sha256 (hex), decoded format and the name it came with."""

    data: bytes
    sha256: str
    image_format: str | None
    file_name: str


def validate_upload(data: bytes, file_name: str, settings: Settings) -> Upload:
    """Decode once with the search route's checks (size, pixel cap, format, truncation).

    Raises:
        ImageError: with the same status and message a search upload gets.
    """
    decode_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels,
                 name=f"upload {file_name}".strip())
    with Image.open(io.BytesIO(data)) as f:  # the decoded copy is RGB-converted: the format is in the header
        fmt = f.format
    return Upload(data, sha256_bytes(data), fmt, Path(file_name or "upload").name[:255] or "upload")


class Ingest:
    """Queues images for the workers. Thread-safe (its parts are)."""

    def __init__(self, settings: Settings, store: Store, originals: OriginalsStore, app: procrastinate.App):
        self.settings, self.store, self.originals, self.app = settings, store, originals, app

    def check_capacity(self, n_new: int = 1) -> None:
        """Raise `QueueFullError` when `n_new` more jobs would pass QUEUE_MAX_DEPTH queued jobs."""
        depth = self.store.tasks.queue_depth(QUEUE).get("todo", 0)  # follow-up OCR jobs do not hold uploads back
        if depth + n_new > self.settings.queue_max_depth:
            raise QueueFullError(f"the indexing queue holds {depth:,} jobs (QUEUE_MAX_DEPTH="
                                 f"{self.settings.queue_max_depth:,}); retry later", retry_after=30)

    def _enqueue(self, batch: str, job: IndexJob) -> TaskRecord:
        task_id = str(uuid.uuid4())
        existing = self.store.images.by_sha(job.sha256)
        if existing is not None:
            self.store.tasks.add(task_id=task_id, batch=batch, sha256=job.sha256, file_name=job.file_name,
                                job_id=None, status="succeeded")
        else:
            job_id = self.store.tasks.active_job_for(job.sha256) or defer_index_job(self.app, job) \
                or self.store.tasks.active_job_for(job.sha256)
            self.store.tasks.add(task_id=task_id, batch=batch, sha256=job.sha256, file_name=job.file_name,
                                job_id=job_id)
        return self.store.tasks.get(task_id=task_id)[0]

    def add_uploads(self, uploads: list[Upload]) -> tuple[str, list[TaskRecord]]:
        """Store each original once and queue the new ones. Returns (batch id, one task per upload).

        Raises:
            QueueFullError: the queue is full (nothing is stored or queued).
        """
        new = {u.sha256 for u in uploads} - set(self.store.images.ids_by_sha([u.sha256 for u in uploads]))
        self.check_capacity(len(new))
        batch = str(uuid.uuid4())
        tasks = []
        for u in uploads:
            key = original_key(u.sha256, u.image_format)
            if u.sha256 in new:
                self.originals.put(key, u.data)
            tasks.append(self._enqueue(batch, IndexJob(u.sha256, key, "originals", u.file_name)))
        return batch, tasks

    def add_receipts(self, uploads: list[Upload]) -> tuple[str, list[TaskRecord]]:
        """Store each receipt photo once and queue the reading of the new ones (`RECEIPT_TASK`, enrich queue). A photo
        already in the ledger gets a task `succeeded` at once with its receipt id. Returns (batch id, one task per
        upload).

        Raises:
            QueueFullError: the enrich queue holds QUEUE_MAX_DEPTH jobs (nothing is stored or queued).
        """
        known = self.store.receipts.ids_by_sha([u.sha256 for u in uploads])
        new = {u.sha256 for u in uploads} - set(known)
        depth = self.store.tasks.queue_depth(ENRICH_QUEUE).get("todo", 0)
        if depth + len(new) > self.settings.queue_max_depth:
            raise QueueFullError(f"the enrichment queue holds {depth:,} jobs (QUEUE_MAX_DEPTH="
                                 f"{self.settings.queue_max_depth:,}); retry later", retry_after=30)
        batch = str(uuid.uuid4())
        tasks = []
        for u in uploads:
            key = original_key(u.sha256, u.image_format)
            task_id = str(uuid.uuid4())
            if u.sha256 in known:
                self.store.tasks.add(task_id=task_id, batch=batch, sha256=u.sha256, file_name=u.file_name,
                                     job_id=None, status="succeeded", kind="receipt")
            else:
                self.originals.put(key, u.data)
                job = IndexJob(u.sha256, key, "originals", u.file_name)
                job_id = self.store.tasks.active_job_for(u.sha256, RECEIPT_LOCK_PREFIX) or defer_enrich_job_sync(
                    self.app, job, RECEIPT_TASK) or self.store.tasks.active_job_for(u.sha256, RECEIPT_LOCK_PREFIX)
                self.store.tasks.add(task_id=task_id, batch=batch, sha256=u.sha256, file_name=u.file_name,
                                     job_id=job_id, kind="receipt")
            tasks.append(self.store.tasks.get(task_id=task_id)[0])
        return batch, tasks

    def delete_receipt(self, receipt_id: int) -> bool | None:
        """Delete a receipt from the ledger and its stored photo when nothing else uses it. Returns whether the photo
        was deleted, or None for no such receipt."""
        removed = self.store.receipts.delete(receipt_id)
        if removed is None:
            return None
        key, unused = removed
        if unused:
            try:
                self.originals.delete(key)
            except OSError as e:
                log.warning("could not delete original %s: %s", key, e)
        return unused

    def scan_root_of(self, folder: str | Path) -> tuple[Path, Path]:
        """(resolved folder, the SCAN_ROOTS entry holding it).

        Raises:
            ScanRefusedError: scanning is off or the folder is outside every SCAN_ROOTS entry.
            ScanPathError: the path cannot be looked up (see `resolve_folder`).
            FileNotFoundError: the folder does not exist.
        """
        if not self.settings.scan_roots:
            raise ScanRefusedError("scanning server folders is off: list the folders it may read in SCAN_ROOTS")
        resolved = resolve_folder(folder)
        for root in self.settings.scan_roots:
            r = Path(root).expanduser().resolve()
            if resolved == r or r in resolved.parents:
                try:
                    is_dir = resolved.is_dir()
                except OSError as e:  # ENAMETOOLONG and the like: is_dir only swallows "not found" errors
                    raise ScanPathError(f"{_shown(folder)} cannot be looked up: {e.strerror or e}") from None
                if not is_dir:
                    raise FileNotFoundError(f"{_shown(folder)} is not a folder")
                return resolved, r
        raise ScanRefusedError(f"{_shown(folder)} is not under a folder listed in SCAN_ROOTS")

    def scan(self, folder: str | Path) -> tuple[str, list[TaskRecord]]:
        """Queue every image under a folder inside SCAN_ROOTS; the files are indexed where they are.

        Raises:
            ScanRefusedError, ScanPathError, FileNotFoundError: see `scan_root_of`. QueueFullError: the queue is
                full.
        """
        resolved, root = self.scan_root_of(folder)
        files = [f for f in list_images(resolved) if _inside(f, root)]  # no symlink leaves the root
        if len(files) > self.settings.queue_max_depth:
            raise QueueFullError(f"{len(files):,} images is more than QUEUE_MAX_DEPTH="
                                 f"{self.settings.queue_max_depth:,}; scan a smaller folder", retry_after=60)
        hashed = []
        for f in files:
            try:
                if f.stat().st_size > self.settings.index_max_bytes:
                    continue
                hashed.append((f.resolve(), sha256_bytes(f.read_bytes())))
            except OSError as e:
                log.warning("scan: cannot read %s: %s", f, e)
        new = {s for _, s in hashed} - set(self.store.images.ids_by_sha([s for _, s in hashed]))
        self.check_capacity(len(new))
        batch = str(uuid.uuid4())
        tasks = [self._enqueue(batch, IndexJob(sha, str(f), "file", f.relative_to(root).as_posix()))
                 for f, sha in hashed]
        return batch, tasks

    def delete_image(self, image_id: int) -> Removed | None:
        """Delete an image, its items and vectors (FAISS follows through NOTIFY) and its stored original."""
        removed = self.store.images.delete(image_id)
        if removed is not None:
            for key in removed.originals:
                try:
                    self.originals.delete(key)
                except OSError as e:  # the rows are gone; an orphan file is harmless and logged
                    log.warning("could not delete original %s: %s", key, e)
        return removed


def queue_enrichments(store: Store, enrichment: str, sources: list[SourceFile]) -> int:
    """Queue the follow-up enrichment (OCR) of the indexed images of `sources` (files indexed where they lie) whose
    enrichment signature is not `enrichment` (the full one: `Indexer.enrichment` with OCR on). Returns how many
    jobs were queued; the workers (`python -m clip_embedder.worker`) run them."""
    by_sha = {file_sha256(s.path): s for s in sources if s.storage == "file"}
    ids = store.images.ids_by_sha(list(by_sha))
    need = store.images.enriched_otherwise(list(ids.values()), enrichment)
    app = sync_app(store.url)
    queued = 0
    with app.open():
        for sha, image_id in ids.items():
            if image_id in need:
                src = by_sha[sha]
                queued += defer_enrich_job_sync(app, IndexJob(sha, src.path, "file", src.file_name)) is not None
    return queued
