"""scripts/extract_coco_subset.py's split, without the data."""
from __future__ import annotations

from tests.helpers import extract_coco_subset


def test_split_is_deterministic():
    ecs = extract_coco_subset()
    ids = list(range(100))
    assert ecs.split_ids(ids, (0.7, 0.15, 0.15), 3) == ecs.split_ids(list(reversed(ids)), (0.7, 0.15, 0.15), 3)
