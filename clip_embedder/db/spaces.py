"""Embedding spaces: the stored identity of each (model, weights, dim) and its vectors table."""
from __future__ import annotations

import logging

import psycopg
from psycopg.rows import DictRow, class_row
from psycopg_pool import ConnectionPool

from clip_embedder.db.common import Repository, notify, one, vec_table
from clip_embedder.models.embedders import SpaceIdentity, SpaceMismatchError

log = logging.getLogger(__name__)


#: pg_advisory_xact_lock key of the spaces' DDL (tables, pgvector indexes): "sPac"
_SPACES_LOCK = 0x73506163


class SpaceRepository(Repository):
    """`spaces` and the `vectors_<space>` tables' existence and pgvector index."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[DictRow]], pgvector_index: str = "hnsw"):
        super().__init__(pool)
        #: "hnsw": each vectors table carries pgvector's HNSW index (SQL similarity queries); "none": it is dropped
        self.pgvector_index = pgvector_index

    def get(self, name: str) -> SpaceIdentity | None:
        """The stored identity of a space, or None when it was never indexed."""
        with self.conn() as c, c.cursor(row_factory=class_row(SpaceIdentity)) as cur:
            return cur.execute("SELECT name, model, weights, dim FROM spaces WHERE name=%s", (name,)).fetchone()

    def identities(self) -> list[SpaceIdentity]:
        """Identities of every indexed space, by name."""
        with self.conn() as c, c.cursor(row_factory=class_row(SpaceIdentity)) as cur:
            return cur.execute("SELECT name, model, weights, dim FROM spaces ORDER BY name").fetchall()

    def ensure(self, identity: SpaceIdentity, *, recreate: bool = False) -> None:
        """Create the space (row, vector table, HNSW index) or check that it was built by the same model.

        The table gets (or loses) pgvector's HNSW index as PGVECTOR_INDEX says, for a new or an existing space.

        Args:
            recreate: drop the space's vectors when its stored identity differs, instead of raising.

        Raises:
            SpaceMismatchError: the space exists with another identity and `recreate` is False.
        """
        table = vec_table(identity.name)
        stored = self.get(identity.name)
        if stored is not None and stored != identity:
            if not recreate:
                raise SpaceMismatchError(
                    f"space {identity.name!r} was built by {stored.describe()}, but the configured model is "
                    f"{identity.describe()}. Re-index with --recreate-space (drops its vectors) or keep the old model.")
            log.warning("dropping space %s built by %s", identity.name, stored.describe())
            self.drop(identity.name)
            stored = None
        if stored is None:
            with self.conn() as c:
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_SPACES_LOCK,))
                c.execute(f"CREATE TABLE IF NOT EXISTS {table} (item_id BIGINT PRIMARY KEY "
                          f"REFERENCES items(id) ON DELETE CASCADE, embedding vector({int(identity.dim)}) NOT NULL)")
                c.execute("INSERT INTO spaces (name, model, weights, dim) VALUES (%s, %s, %s, %s) "
                          "ON CONFLICT (name) DO NOTHING",
                          (identity.name, identity.model, identity.weights, identity.dim))
        self._apply_pgvector_index(table, identity.dim)

    def _apply_pgvector_index(self, table: str, dim: int) -> None:
        """Create or drop pgvector's HNSW index of a vectors table as PGVECTOR_INDEX says (creating it over
        existing rows takes a while at scale: logged). Under a transaction-level advisory lock: the API and the
        workers start together, and PostgreSQL's `IF NOT EXISTS` is not safe against a concurrent creation (it
        raised a unique violation on `pg_class` when compose started them at once)."""
        with self.conn() as c:
            c.execute("SELECT pg_advisory_xact_lock(%s)", (_SPACES_LOCK,))
            exists = one(c.execute("SELECT count(*) AS n FROM pg_indexes WHERE tablename = %s AND indexname = %s",
                                   (table, f"{table}_hnsw")))["n"] > 0
            if self.pgvector_index == "none" and exists:
                log.info("dropping pgvector's HNSW index of %s (PGVECTOR_INDEX=none)", table)
                c.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
            elif self.pgvector_index == "hnsw" and not exists and dim <= 2000:  # pgvector's HNSW limit for `vector`
                log.info("building pgvector's HNSW index of %s (PGVECTOR_INDEX=hnsw)", table)
                c.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} "
                          "USING hnsw (embedding vector_cosine_ops)")

    def drop(self, name: str) -> None:
        """Drop a space's vectors table and identity (items and images stay)."""
        with self.conn() as c:
            c.execute(f"DROP TABLE IF EXISTS {vec_table(name)}")
            c.execute("DELETE FROM spaces WHERE name=%s", (name,))
            notify(c, reset=True)

