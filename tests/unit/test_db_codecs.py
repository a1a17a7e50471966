"""What the database package computes without a database: the COPY codec, table names, migrations, records."""
from __future__ import annotations

import numpy as np
import pytest

from clip_embedder.db.common import vec_table
from clip_embedder.db.copy_codec import PGCOPY_SIGNATURE, decode_copy_rows, encode_copy_rows
from clip_embedder.db.migrate import migrations
from clip_embedder.db.records import ImageRow, ItemRow
from clip_embedder.models.ocr import OcrLine


def test_copy_rows_round_trip():
    ids = np.array([1, 5, 2**40], np.int64)
    vecs = np.random.default_rng(0).standard_normal((3, 7)).astype(np.float32)
    data = encode_copy_rows(ids, vecs)
    row_size = 22 + 4 * 7
    assert len(data) == 3 * row_size
    got_ids, got_vecs = decode_copy_rows(data, row_size)
    assert got_ids.dtype == np.int64 and got_vecs.dtype == np.float32
    assert (got_ids == ids).all() and np.array_equal(got_vecs, vecs)
    assert PGCOPY_SIGNATURE.startswith(b"PGCOPY")


def test_copy_rows_of_another_shape_are_refused():
    data = bytearray(encode_copy_rows(np.array([1], np.int64), np.ones((1, 4), np.float32)))
    data[1] = 3  # three fields instead of two
    with pytest.raises(RuntimeError, match="unexpected row"):
        decode_copy_rows(bytes(data), 22 + 16)


def test_vector_tables_are_named_only_from_safe_space_names():
    assert vec_table("clip") == "vectors_clip"
    for bad in ("Clip", "clip; DROP TABLE images", "1clip", ""):
        with pytest.raises(ValueError):
            vec_table(bad)


def test_migrations_are_numbered_in_order_and_read_from_the_package():
    found = migrations()
    versions = [v for v, _, _ in found]
    assert versions == sorted(versions) == list(range(1, len(found) + 1)) and len(found) >= 3
    assert all(sql.strip() for _, _, sql in found)


def test_rows_to_write():
    new = ItemRow(kind="image", label=None, score=None, bbox=(0, 0, 10, 10), crop=(0, 0, 10, 10), description="d")
    assert new.description_changed
    same = ItemRow(kind="image", label=None, score=None, bbox=(0, 0, 10, 10), crop=(0, 0, 10, 10), description="d",
                   item_id=3, old_description="d")
    assert not same.description_changed
    row = ImageRow(sha256="s", path="p", width=1, height=1, split=None, description="", detector_sha256=None,
                   ocr=[OcrLine("EXIT", 0.9, (0, 0, 1, 1)), OcrLine("PUSH", 0.8, (0, 2, 1, 3))])
    assert row.ocr_text == "EXIT\nPUSH"
