"""Images: one row per distinct file content, with its items, tags and OCR lines; re-detection and re-enrichment
bookkeeping; deletion."""
from __future__ import annotations

from psycopg.rows import class_row

from clip_embedder.db.common import Repository, notify, one
from clip_embedder.db.items import ITEM_SELECT, read_tags
from clip_embedder.db.records import ImageDetail, ImageMove, ImageRecord, ItemRecord, Removed
from clip_embedder.models.ocr import OcrLine

#: the columns of `ImageRecord`
IMAGE_SELECT = ("SELECT id, sha256, path, storage, file_name, width, height, split, description, detector_sha256, "
                "created_at, ocr_text, enrichment FROM images ")


class ImageRepository(Repository):
    """Reads and deletes of `images` (with their items, tags and OCR lines)."""

    def get(self, image_id: int) -> ImageDetail | None:
        """An image with its object items, or None."""
        with self.conn() as c:
            with c.cursor(row_factory=class_row(ImageRecord)) as cur:
                im = cur.execute(IMAGE_SELECT + "WHERE id=%s", (image_id,)).fetchone()
            if im is None:
                return None
            with c.cursor(row_factory=class_row(ItemRecord)) as cur:
                items = cur.execute(ITEM_SELECT + "WHERE i.image_id=%s ORDER BY i.kind, i.score DESC NULLS LAST, i.id",
                                    (image_id,)).fetchall()
            ocr = [OcrLine(r["text"], r["confidence"], (r["x1"], r["y1"], r["x2"], r["y2"])) for r in c.execute(
                "SELECT text, confidence, x1, y1, x2, y2 FROM ocr_lines WHERE image_id=%s ORDER BY id", (image_id,))]
            tags = read_tags(c, [i.id for i in items])
        return ImageDetail(im, [i for i in items if i.kind == "object"],
                           next((i.id for i in items if i.kind == "image"), None), tags, ocr)

    def by_sha(self, sha256: str) -> ImageRecord | None:
        """The stored image with this content sha256, or None."""
        with self.conn() as c, c.cursor(row_factory=class_row(ImageRecord)) as cur:
            return cur.execute(IMAGE_SELECT + "WHERE sha256=%s", (sha256,)).fetchone()

    def delete(self, image_id: int) -> Removed | None:
        """Delete an image with its items and their vectors in every space, in one transaction.

        Returns:
            What was removed (the stored original's key when the project owns it and no receipt in the ledger
            holds the same photo), or None when no image has this id.
        """
        with self.conn() as c:
            im = c.execute("SELECT id, path, storage FROM images WHERE id=%s FOR UPDATE", (image_id,)).fetchone()
            if im is None:
                return None
            items = [r["id"] for r in c.execute("DELETE FROM items WHERE image_id=%s RETURNING id", (image_id,))]
            c.execute("DELETE FROM images WHERE id=%s", (image_id,))
            notify(c, removed=items)
            shared = c.execute("SELECT EXISTS (SELECT 1 FROM receipts WHERE original = %s) AS used",
                               (im["path"],)).fetchone()
        owned = im["storage"] == "originals" and not (shared and shared["used"])
        return Removed([image_id], items, [im["path"]] if owned else [])

    # --- reads ---------------------------------------------------------------------------------
    def ids_by_sha(self, shas: list[str]) -> dict[str, int]:
        """sha256 → image id for the given digests that are already stored."""
        if not shas:
            return {}
        with self.conn() as c:
            return {r["sha256"]: r["id"] for r in c.execute("SELECT id, sha256 FROM images WHERE sha256 = ANY(%s)",
                                                             (shas,))}

    def repoint(self, moves: list[ImageMove]) -> int:
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

    def enriched_otherwise(self, image_ids: list[int], enrichment: str) -> set[int]:
        """Those of `image_ids` whose tags / OCR / descriptions were built with another configuration."""
        if not image_ids:
            return set()
        with self.conn() as c:
            return {r["id"] for r in c.execute("SELECT id FROM images WHERE id = ANY(%s) AND enrichment IS DISTINCT "
                                               "FROM %s", (image_ids, enrichment))}

    def counts(self) -> dict[str, int]:
        """Row counts: {"images": n, "objects": n}."""
        with self.conn() as c:
            return {"images": one(c.execute("SELECT count(*) AS n FROM images"))["n"],
                    "objects": one(c.execute("SELECT count(*) AS n FROM items WHERE kind='object'"))["n"]}
