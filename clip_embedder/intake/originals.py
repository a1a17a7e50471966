"""Uploaded originals, stored once and content-addressed by sha256 under STORAGE_ROOT.

A key is `<sha[:2]>/<sha[2:4]>/<sha256><suffix>` (the suffix from the decoded format, e.g. ".jpg").
The root is a local folder or `gs://bucket/prefix` (google-cloud-storage; `STORAGE_EMULATOR_HOST`
points it at an emulator). Writes are atomic (local: temp file + rename; GCS: one object upload)
and idempotent: the same bytes are stored once.
"""
from __future__ import annotations

import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif", "MPO": ".jpg"}
MEDIA_TYPE = {".jpg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".bmp": "image/bmp",
              ".tif": "image/tiff"}


def original_key(sha256: str, image_format: str | None) -> str:
    """The storage key of an original: `ab/cd/<sha256>.jpg` (suffix from the Pillow format name)."""
    if len(sha256) != 64:
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}{FORMAT_SUFFIX.get((image_format or '').upper(), '')}"


def media_type(key: str) -> str:
    """The HTTP media type of a stored original, from its key's suffix."""
    return MEDIA_TYPE.get(Path(key).suffix.lower(), "application/octet-stream")


class OriginalsStore(ABC):
    """Where uploads live. `put` is idempotent; `get` raises `FileNotFoundError` for an unknown key."""

    root: str

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key` (atomically; a no-op when the key exists)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The stored bytes. Raises FileNotFoundError."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether `key` is stored."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove `key` (no error when it is absent)."""


class LocalOriginals(OriginalsStore):
    """Originals in a local folder."""

    def __init__(self, root: str | Path):
        self.root = str(root)
        self._root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        p = (self._root / key).resolve()
        if self._root not in p.parents:
            raise ValueError(f"key {key!r} leaves the storage root")
        return p

    def put(self, key: str, data: bytes) -> None:
        p = self._path(key)
        if p.exists():
            return
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=p.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class GCSOriginals(OriginalsStore):
    """Originals in Google Cloud Storage under `gs://bucket/prefix` (credentials from the environment;
    `STORAGE_EMULATOR_HOST` for an emulator)."""

    def __init__(self, root: str):
        from google.cloud import storage  # noqa: PLC0415

        self.root = root
        bucket, _, prefix = root[len("gs://"):].partition("/")
        if not bucket:
            raise ValueError(f"STORAGE_ROOT {root!r} names no bucket; use gs://bucket/prefix")
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            from google.auth.credentials import AnonymousCredentials  # noqa: PLC0415

            client = storage.Client(project="local", credentials=AnonymousCredentials())
        else:
            client = storage.Client()
        self._bucket = client.bucket(bucket)
        self._prefix = prefix.strip("/")

    def _blob(self, key: str):
        return self._bucket.blob(f"{self._prefix}/{key}" if self._prefix else key)

    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        if blob.exists():
            return
        blob.upload_from_string(data, content_type=media_type(key))

    def get(self, key: str) -> bytes:
        from google.api_core.exceptions import NotFound  # noqa: PLC0415

        try:
            return self._blob(key).download_as_bytes()
        except NotFound as e:
            raise FileNotFoundError(f"original {key} is not in {self.root}") from e

    def exists(self, key: str) -> bool:
        return bool(self._blob(key).exists())

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound  # noqa: PLC0415

        try:
            self._blob(key).delete()
        except NotFound:
            pass


def open_originals(root: str) -> OriginalsStore:
    """The originals store for STORAGE_ROOT: `gs://bucket/prefix` or a local folder."""
    return GCSOriginals(root) if root.startswith("gs://") else LocalOriginals(root)
