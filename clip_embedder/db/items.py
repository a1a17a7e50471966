"""Items (whole images and detected objects) read with their image's size and location, and their tags."""
from __future__ import annotations

import psycopg
from psycopg.rows import DictRow, class_row

from clip_embedder.db.common import Repository
from clip_embedder.db.lexical import tsquery_lexeme
from clip_embedder.db.records import ItemRecord
from clip_embedder.models.tagger import Tag

#: the columns of `ItemRecord` read from `items i`
ITEM_COLS = ("i.id, i.image_id, i.kind, i.label, i.score, i.x1, i.y1, i.x2, i.y2, i.crop_x1, i.crop_y1, i.crop_x2, "
             "i.crop_y2, i.description, i.keywords")
ITEM_SELECT = f"SELECT {ITEM_COLS}, im.width, im.height, im.path, im.storage, im.file_name, im.sha256 " \
              "FROM items i JOIN images im ON im.id = i.image_id "


def read_items(c: psycopg.Connection[DictRow], item_ids: list[int]) -> dict[int, ItemRecord]:
    """Items by id on an open connection (`ItemRepository.get`)."""
    with c.cursor(row_factory=class_row(ItemRecord)) as cur:
        return {r.id: r for r in cur.execute(ITEM_SELECT + "WHERE i.id = ANY(%s)", (list(map(int, item_ids)),))}


def read_tags(c: psycopg.Connection[DictRow], item_ids: list[int]) -> dict[int, list[Tag]]:
    """item id → its tags, best first, on an open connection (`ItemRepository.tags_of`)."""
    out: dict[int, list[Tag]] = {}
    if not item_ids:
        return out
    for r in c.execute("SELECT item_id, source, label, score FROM tags WHERE item_id = ANY(%s) "
                       "ORDER BY item_id, score DESC, label", (list(map(int, item_ids)),)):
        out.setdefault(r["item_id"], []).append(Tag(r["label"], round(float(r["score"]), 4), r["source"]))
    return out


class ItemRepository(Repository):
    """Reads of `items` (joined with `images`) and `tags`."""

    def get(self, item_ids: list[int]) -> dict[int, ItemRecord]:
        """Items joined with their image (size, location, file name), keyed by item id."""
        if not item_ids:
            return {}
        with self.conn() as c:
            return read_items(c, item_ids)

    def get_with_tags(self, item_ids: list[int]) -> tuple[dict[int, ItemRecord], dict[int, list[Tag]]]:
        """`get_items` and `tags_of` of the items found, on one pooled connection in one transaction (a checkout
        costs the pool's liveness check and a COMMIT: two round trips saved per search result list)."""
        if not item_ids:
            return {}, {}
        with self.conn() as c:
            items = read_items(c, item_ids)
            return items, read_tags(c, list(items))

    def tags_of(self, item_ids: list[int]) -> dict[int, list[Tag]]:
        """item id → its tags, best first (items without tags are absent)."""
        if not item_ids:
            return {}
        with self.conn() as c:
            return read_tags(c, item_ids)

    def of_images(self, image_ids: list[int]) -> dict[int, list[ItemRecord]]:
        """image id → its items (whole image first, then objects by id)."""
        if not image_ids:
            return {}
        out: dict[int, list[ItemRecord]] = {i: [] for i in image_ids}
        with self.conn() as c, c.cursor(row_factory=class_row(ItemRecord)) as cur:
            for r in cur.execute(ITEM_SELECT + "WHERE i.image_id = ANY(%s) ORDER BY i.image_id, i.kind, i.id",
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

    def labels(self) -> list[str]:
        """Distinct object labels in the index, sorted."""
        with self.conn() as c:
            return [r["label"] for r in c.execute("SELECT DISTINCT label FROM items WHERE kind='object' ORDER BY 1")]

    def label_counts(self, label: str) -> dict[int, int]:
        """image id → how many objects labelled `label` were detected in it (images with at least one)."""
        with self.conn() as c:
            rows = c.execute("SELECT image_id, count(*) AS n FROM items WHERE kind = 'object' AND label = %s "
                             "GROUP BY image_id", (label,)).fetchall()
        return {r["image_id"]: int(r["n"]) for r in rows}

    def colour_items(self, label: str, colour: str) -> dict[int, int]:
        """image id → its surest object labelled `label` whose crop's colours (in its keywords, written by the
        describe stage from `indexing.colours.crop_colours`) include `colour` (one of `COLOUR_NAMES`)."""
        with self.conn() as c:
            rows = c.execute("SELECT DISTINCT ON (image_id) image_id, id FROM items WHERE kind = 'object' AND "
                             "label = %s AND lexical @@ to_tsquery('simple', %s) ORDER BY image_id, score DESC",
                             (label, tsquery_lexeme(colour))).fetchall()
        return {int(r["image_id"]): int(r["id"]) for r in rows}
