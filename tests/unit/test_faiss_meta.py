"""A FAISS index's per-vector metadata, read without the database."""
from __future__ import annotations

import numpy as np

from clip_embedder.indexing.faiss_index import SpaceIndex
from clip_embedder.models.embedders import SpaceIdentity


def test_item_images_reads_the_metadata_sorted_or_not_and_empty():
    """`SpaceIndex.item_images` answers from the metadata arrays, whatever their order (ids re-added after a repair
    come last), skips ids it does not hold, gives None for a whole image's score, and {} for an empty index."""
    import faiss

    ident = SpaceIdentity("text", "m", "w", 4)

    def meta(ids, images, scores):
        return {"ids": np.array(ids, np.int64), "kind": np.array(["object"] * len(ids), dtype=object),
                "label": np.array([""] * len(ids), dtype=object), "image_id": np.array(images, np.int64),
                "score": np.array(scores, np.float32)}
    ix = SpaceIndex(ident, faiss.IndexIDMap2(faiss.IndexFlatIP(4)), meta([], [], []))
    assert ix.item_images([1, 2]) == {}
    for ids in ([3, 5, 9], [5, 3, 9]):
        images, scores = {3: 30, 5: 50, 9: 90}, {3: 0.25, 5: np.nan, 9: 0.75}
        ix.meta = meta(ids, [images[i] for i in ids], [scores[i] for i in ids])
        assert ix.item_images([9, 4, 3, 5, 100, 1]) == {9: (90, 0.75), 3: (30, 0.25), 5: (50, None)}
