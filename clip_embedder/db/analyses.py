"""Analyses: what each image holds (a description, the sensitive verdict, labels with boxes), as the analysis job
stored it; the image sets search filters on (`sensitive=exclude|only`, `faces=true`); and a hosted provider's
description written into the image's whole-image item as its caption (description, keywords, description-space
vectors)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
from psycopg.types.json import Jsonb

from clip_embedder.analysis.records import Analysis
from clip_embedder.db.common import Repository, notify, vec_table


@dataclass(frozen=True)
class StoredAnalysis:
    """An image's stored analysis: what wrote it (`signature`) and when."""

    image_id: int
    signature: str
    analysis: Analysis
    analysed_at: datetime


class AnalysisRepository(Repository):
    """The `analyses` table (migration 0005)."""

    def save(self, image_id: int, analysis: Analysis, signature: str) -> bool:
        """Store (or replace) an image's analysis. Returns False when the image is gone (deleted meanwhile)."""
        faces = sum(1 for lb in analysis.labels if lb.source == "face")
        if analysis.sensitive is not None:
            faces = max(faces, sum(1 for r in analysis.sensitive.reasons if r.category == "face"))
        with self.conn() as c:
            row = c.execute(
                "INSERT INTO analyses (image_id, signature, provider, sensitive, faces, description, analysis) "
                "SELECT id, %s, %s, %s, %s, %s, %s FROM images WHERE id = %s "
                "ON CONFLICT (image_id) DO UPDATE SET signature = EXCLUDED.signature, provider = EXCLUDED.provider, "
                "sensitive = EXCLUDED.sensitive, faces = EXCLUDED.faces, description = EXCLUDED.description, "
                "analysis = EXCLUDED.analysis, analysed_at = now() RETURNING image_id",
                (signature, analysis.provider, analysis.sensitive.verdict if analysis.sensitive else None, faces,
                 analysis.description, Jsonb(analysis.model_dump(mode="json")), image_id)).fetchone()
        return row is not None

    def get(self, image_id: int) -> StoredAnalysis | None:
        """The stored analysis of an image, or None (not analysed, or no such image)."""
        with self.conn() as c:
            row = c.execute("SELECT image_id, signature, analysis, analysed_at FROM analyses WHERE image_id = %s",
                            (image_id,)).fetchone()
        if row is None:
            return None
        return StoredAnalysis(row["image_id"], row["signature"], Analysis.model_validate(row["analysis"]),
                              row["analysed_at"])

    def signature(self, image_id: int) -> str | None:
        """What wrote an image's stored analysis (None: not analysed)."""
        with self.conn() as c:
            row = c.execute("SELECT signature FROM analyses WHERE image_id = %s", (image_id,)).fetchone()
        return row["signature"] if row else None

    def flags(self, image_ids: list[int]) -> dict[int, tuple[bool | None, int]]:
        """image id → (its verdict, its face count) for those of `image_ids` with a stored analysis (the verdict is
        None when the analysis left the sensitive task out)."""
        if not image_ids:
            return {}
        with self.conn() as c:
            rows = c.execute("SELECT image_id, sensitive, faces FROM analyses WHERE image_id = ANY(%s)",
                             (list(image_ids),)).fetchall()
        return {r["image_id"]: (r["sensitive"], r["faces"]) for r in rows}

    def whole_item(self, image_id: int) -> tuple[int, str, str] | None:
        """(whole-image item id, the image's own description, the item's keywords) of an image, or None when it is
        gone. The image's description (objects, tags, text read) is what a caption is put before."""
        with self.conn() as c:
            row = c.execute("SELECT it.id, im.description, it.keywords FROM items it JOIN images im ON im.id = "
                            "it.image_id WHERE it.kind = 'image' AND it.image_id = %s", (image_id,)).fetchone()
        return (row["id"], row["description"] or "", row["keywords"] or "") if row else None

    def save_caption(self, item_id: int, description: str, keywords: str, vectors: dict[str, np.ndarray]) -> None:
        """Give a whole-image item its captioned description and keywords and their vectors in the description
        spaces (upserted), in one transaction; running APIs re-read the item's vectors (NOTIFY)."""
        with self.conn() as c:
            c.execute("UPDATE items SET description = %s, keywords = %s WHERE id = %s", (description, keywords,
                                                                                        item_id))
            for space, vec in vectors.items():
                c.execute(f"INSERT INTO {vec_table(space)} (item_id, embedding) VALUES (%s, %s) "
                          "ON CONFLICT (item_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                          (item_id, np.asarray(vec, np.float32)))
            notify(c, removed=[item_id])

    def caption_sources(self) -> dict[str, int]:
        """Where the captions in the description spaces came from: "provider:model" → images captioned."""
        with self.conn() as c:
            rows = c.execute("SELECT split_part(signature, ':t=', 1) AS source, count(*) AS n FROM analyses "
                             "WHERE provider <> 'local' AND description <> '' GROUP BY 1 ORDER BY 1").fetchall()
        return {r["source"]: r["n"] for r in rows}

    def counts(self) -> dict[str, int]:
        """Analysed images, those sensitive and those with faces."""
        with self.conn() as c:
            row = c.execute("SELECT count(*) AS n, count(*) FILTER (WHERE sensitive) AS s, "
                            "count(*) FILTER (WHERE faces > 0) AS f FROM analyses").fetchone()
        assert row is not None
        return {"analysed": row["n"], "sensitive": row["s"], "with_faces": row["f"]}
