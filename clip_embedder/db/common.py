"""What every repository shares: the pool it reads and writes through, the vectors table of a space, and the
notification that tells running API processes to refresh their FAISS indexes."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.rows import DictRow
from psycopg_pool import ConnectionPool

_SPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")
#: the channel on which every write that adds or removes vectors is announced (payload: JSON, see `notify`)
NOTIFY_CHANNEL = "clip_embedder_index"


def one(cur: psycopg.Cursor[DictRow]) -> DictRow:
    """The single row an aggregate query always returns."""
    row = cur.fetchone()
    assert row is not None
    return row


def vec_table(space: str) -> str:
    """The vectors table of a space (`vectors_<space>`).

    Raises:
        ValueError: a name that is not lower-case letters, digits and underscores (it is spliced into SQL).
    """
    if not _SPACE_RE.match(space):
        raise ValueError(f"invalid space name {space!r}")
    return f"vectors_{space}"


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


class Repository:
    """Base of the repositories: typed reads and writes over the connection pool of the `Store` that built them."""

    def __init__(self, pool: ConnectionPool[psycopg.Connection[DictRow]]):
        self.pool = pool

    @contextmanager
    def conn(self) -> Iterator[psycopg.Connection[DictRow]]:
        """A pooled connection inside one transaction (committed on success, rolled back on error)."""
        with self.pool.connection() as conn:
            yield conn
