"""Searchable first, read after: the indexing jobs' indexer defers OCR and stamps what it wrote as not read; the
enrichment jobs' indexer knows which images still need reading. No models are loaded (OCR engines are lazy)."""
from __future__ import annotations

from clip_embedder.config import Settings
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.pipeline import Indexer
from clip_embedder.models.ocr import create_ocr


def _indexer(ocr: str) -> Indexer:
    engine = create_ocr(Settings(_env_file=None, ocr=ocr))
    return Indexer(None, None, {}, CropPolicy(0.1, 16, 8.0), max_bytes=1, max_pixels=1,  # type: ignore[arg-type]
                   ocr=engine)


def test_the_indexing_pass_defers_ocr_and_the_enrichment_pass_reads_what_it_left():
    full = _indexer("rapidocr")
    first = full.deferring_enrichments()
    assert first.ocr is None and not first.reenrich and first.enrichment.endswith(";ocr=off")
    assert first.enrichment.rsplit(";ocr=", 1)[0] == full.enrichment.rsplit(";ocr=", 1)[0]  # tags as the full one
    assert full.ocr is not None and full.reenrich  # the original is untouched (shared models, own flags)
    assert full.needs_enrichment(first.enrichment)  # written by the first pass: to be read
    assert not full.needs_enrichment(full.enrichment)  # read already (inline, or by an earlier job)
    assert not first.needs_enrichment(first.enrichment)  # the first pass itself adds nothing after the fact
    only = full.enriching_only()
    assert only.only_stored and not full.only_stored and only.enrichment == full.enrichment


def test_without_ocr_nothing_is_left_to_read():
    off = _indexer("off")
    assert off.deferring_enrichments().enrichment == off.enrichment
    assert not off.needs_enrichment(off.enrichment) and not off.needs_enrichment(None)
