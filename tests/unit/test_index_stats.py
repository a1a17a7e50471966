"""What an indexing run reports: batch outcomes summed, and its one-line summary."""
from __future__ import annotations

from clip_embedder.indexing.batch import MODEL_STAGES, STAGES, BatchOutcome, IndexStats


def test_outcomes_add_up_and_the_summary_says_where_the_time_went():
    stats = IndexStats()
    stats.add(BatchOutcome(seen=4, indexed=3, skipped=1, objects=7, errors=["a.jpg: truncated"],
                           timings={"detect": 1.0, "embed": 0.5, "write": 0.25}))
    stats.add(BatchOutcome(seen=2, indexed=2, objects=1, timings={"detect": 1.0, "ocr": 0.5}))
    stats.seconds = 4.0
    assert (stats.seen, stats.indexed, stats.skipped, stats.objects, stats.failed) == (6, 5, 1, 8, 1)
    assert stats.timings == {"detect": 2.0, "embed": 0.5, "write": 0.25, "ocr": 0.5}
    line = stats.summary()
    assert "images=6 indexed=5" in line and "failed=1" in line and "images/s=1.50" in line
    assert "detect=2.00s" in line and "models busy 75% of the wall time" in line  # (2 + 0.5 + 0.5) / 4


def test_stage_names():
    assert STAGES[0] == "read" and STAGES[-1] == "write" and set(MODEL_STAGES) <= set(STAGES)
    assert STAGES.index("ocr") < STAGES.index("describe") < STAGES.index("embed")  # descriptions carry the text
