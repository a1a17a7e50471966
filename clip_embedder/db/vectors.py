"""Vectors of each embedding space: watermarks, bulk streams (COPY) and the per-vector metadata FAISS filters by."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from psycopg.rows import class_row

from clip_embedder.db.common import Repository, one, vec_table
from clip_embedder.db.copy_codec import copy_vectors
from clip_embedder.db.items import ITEM_COLS
from clip_embedder.db.records import ItemMeta, ItemRecord


class VectorRepository(Repository):
    """`vectors_<space>` tables joined with `items`: what FAISS is built and kept fresh from."""

    def items_missing(self, image_ids: list[int], space: str) -> list[ItemRecord]:
        """Items of these images that have no vector in `space` yet, by item id."""
        if not image_ids:
            return []
        with self.conn() as c, c.cursor(row_factory=class_row(ItemRecord)) as cur:
            return cur.execute(
                f"SELECT {ITEM_COLS} FROM items i LEFT JOIN {vec_table(space)} v ON v.item_id = i.id "
                "WHERE i.image_id = ANY(%s) AND v.item_id IS NULL ORDER BY i.id", (image_ids,)).fetchall()

    def watermark(self, space: str) -> tuple[int, int]:
        """(row count, max item id) of a space's vectors: the FAISS staleness check."""
        with self.conn() as c:
            r = one(c.execute(f"SELECT count(*) AS n, coalesce(max(item_id), 0) AS m FROM {vec_table(space)}"))
        return int(r["n"]), int(r["m"])

    def count_upto(self, space: str, max_id: int) -> int:
        """Number of a space's vectors with item id <= max_id (0 < max_id)."""
        with self.conn() as c:
            return int(one(c.execute(f"SELECT count(*) AS n FROM {vec_table(space)} WHERE item_id <= %s",
                                     (max_id,)))["n"])

    def stream(self, space: str, batch: int = 50_000, after_id: int = 0
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream a space's vectors with item id > after_id, in id order:
        yields (ids int64 (n,), vectors float32 (n, dim)), at most `batch` rows at a time.

        One `COPY … TO STDOUT (FORMAT BINARY)` whose fixed-width rows numpy decodes in bulk (`decode_copy_rows`):
        what a cold FAISS rebuild waits for (benchmarks/bench_scale.py --pgvector compares it with a cursor).

        Raises:
            RuntimeError: the stream is not the expected two columns (int8, vector).
        """
        with self.pool.connection() as c, c.cursor() as cur:
            yield from copy_vectors(cur, f"SELECT item_id, embedding FROM {vec_table(space)} "
                                         f"WHERE item_id > {int(after_id)} ORDER BY item_id", batch)

    def item_meta(self, space: str, after_id: int = 0, chunk: int = 2_000_000) -> ItemMeta:
        """Per-vector metadata of a space for search-time filters and ranking, item id > after_id, in id order:
        "ids" int64 (n,), "kind" object (n,) of 'image'/'object', "label" object (n,) ('' for images),
        "image_id" int64 (n,) (the item's image), "score" float32 (n,) (its detection score; NaN for images).

        PostgreSQL packs each run of up to `chunk` rows into one bytea (id int8, kind int2, label code int4, image id
        int8, score float4 per row, big-endian: `int8send` / `int2send` / `int4send` / `float4send`) that numpy reads
        whole: one message per chunk instead of one per row (a million rows in ~1 s; row by row, even as COPY text,
        took ~3.5 s).
        """
        table = vec_table(space)
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

    def by_id(self, space: str, item_ids: list[int] | np.ndarray) -> tuple[np.ndarray, ItemMeta]:
        """The vectors of a space's `item_ids` that exist, with the metadata `item_meta` gives, in id order:
        ((n, dim) float32, {"ids", "kind", "label", "image_id", "score"} as in `item_meta`). For live updates (a
        few rows by id); `item_meta` and `stream` read whole ranges."""
        with self.conn() as c, c.cursor(binary=True) as cur:
            rows = cur.execute(f"SELECT v.item_id, v.embedding, i.kind, coalesce(i.label, '') AS label, i.image_id, "
                               f"i.score FROM {vec_table(space)} v JOIN items i ON i.id = v.item_id "
                               "WHERE v.item_id = ANY(%s) ORDER BY v.item_id", (np.asarray(item_ids).tolist(),)
                               ).fetchall()
        ids = np.array([r["item_id"] for r in rows], np.int64)
        vecs = (np.stack([np.asarray(r["embedding"].to_numpy(), np.float32) for r in rows]) if rows
                else np.zeros((0, 0), np.float32))
        return vecs, {"ids": ids, "kind": np.array([r["kind"] for r in rows], dtype=object),
                      "label": np.array([r["label"] for r in rows], dtype=object),
                      "image_id": np.array([r["image_id"] for r in rows], np.int64),
                      "score": np.array([np.nan if r["score"] is None else r["score"] for r in rows], np.float32)}

    def ids(self, space: str) -> np.ndarray:
        """Every item id with a vector in `space`, int64 (n,), unordered (FAISS reconciles its id set with it)."""
        with self.conn() as c:
            return np.array([r["item_id"] for r in c.execute(f"SELECT item_id FROM {vec_table(space)}")], np.int64)
