"""Indexing batches written atomically: new images with their items, tags, OCR lines and vectors (COPY), re-enriched
items updated, vectors of newly added spaces back-filled — one transaction per batch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import psycopg
from psycopg.rows import DictRow

from clip_embedder.db.common import Repository, notify, vec_table
from clip_embedder.db.copy_codec import PGCOPY_SIGNATURE, encode_copy_rows
from clip_embedder.db.records import ImageRow, ItemRow


class BatchRepository(Repository):
    """The pipeline's write stage: `write` (one transaction per batch)."""

    def write(self, images: list[ImageRow], extra_vectors: dict[str, list[tuple[int, np.ndarray]]] | None = None
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
                image_id = self._write_image(c, im, removed)
                if image_id is None:
                    continue
                if im.update_id is None and im.replace_id is None:
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
                    cur.executemany(f"INSERT INTO {vec_table(space)} (item_id, embedding) VALUES (%s, %s) "
                                    "ON CONFLICT (item_id) DO NOTHING",
                                    [(i, np.asarray(v, np.float32)) for i, v in rows])
            if ids or removed or extra_vectors or changed or new_items:
                notify(c, removed=removed + [it.item_id for im in images for it in im.items
                                             if it.item_id is not None and it.vectors])
        return ids

    @staticmethod
    def _write_image(c: psycopg.Connection[DictRow], im: ImageRow, removed: list[int]) -> int | None:
        """Insert a new image row, or update a re-detected / re-enriched one (its old items' ids are appended to
        `removed` when they are replaced; its OCR lines are deleted). Returns its id; None for a new image whose
        sha256 is already stored (skipped)."""
        image_id = im.update_id if im.update_id is not None else im.replace_id
        if image_id is None:
            row = c.execute(
                "INSERT INTO images (sha256, path, storage, file_name, width, height, split, description, "
                "detector_sha256, ocr_text, enrichment) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (sha256) DO NOTHING RETURNING id",
                (im.sha256, im.path, im.storage, im.file_name or Path(im.path).name, im.width, im.height,
                 im.split, im.description, im.detector_sha256, im.ocr_text, im.enrichment)).fetchone()
            return None if row is None else int(row["id"])
        if im.replace_id is not None:
            removed += [r["id"] for r in c.execute("DELETE FROM items WHERE image_id=%s RETURNING id",
                                                   (im.replace_id,))]
            c.execute("UPDATE images SET width=%s, height=%s, detector_sha256=%s WHERE id=%s",
                      (im.width, im.height, im.detector_sha256, image_id))
        c.execute("UPDATE images SET description=%s, ocr_text=%s, enrichment=%s WHERE id=%s",
                  (im.description, im.ocr_text, im.enrichment, image_id))
        c.execute("DELETE FROM ocr_lines WHERE image_id=%s", (image_id,))
        return image_id

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
            with c.cursor() as cur, cur.copy(f"COPY {vec_table(space)} (item_id, embedding) FROM STDIN "
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
            c.execute(f"INSERT INTO {vec_table(space)} (item_id, embedding) VALUES (%s, %s) "
                      "ON CONFLICT (item_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                      (it.item_id, np.asarray(vec, np.float32)))
