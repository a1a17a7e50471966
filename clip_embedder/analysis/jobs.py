"""Analysis of indexed images (ANALYZE=true, `embed_and_index --analyze`): read the original, analyse it with the
configured provider, store the result (`AnalysisRepository`). The worker's `analyse_image` job and the CLI call the
same functions; a stored analysis written by the same analyser (its `signature`) is not redone. A hosted provider's
description becomes the image's caption (searchable by words and in the `text` space)."""
from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clip_embedder.analysis.records import TASKS, Analysis
from clip_embedder.db.store import Store
from clip_embedder.images import decode_image
from clip_embedder.models.ocr import OcrLine

log = logging.getLogger(__name__)


@dataclass
class AnalysisRun:
    """What one pass over indexed images did (counts of images)."""

    analysed: int = 0
    skipped: int = 0
    failed: int = 0


def stored_lines(store: Store, image_id: int, ocr_done: bool) -> list[OcrLine] | None:
    """The text the enrichment job read in an image (so the local analyser need not read it again), or None when it
    has not been read (`ocr_done` False) or the image is gone."""
    if not ocr_done:
        return None
    detail = store.images.get(image_id)
    return list(detail.ocr) if detail is not None else None


def caption_image(store: Store, embedders: dict[str, Any], image_id: int, caption: str) -> bool:
    """Make a hosted provider's description the image's caption: its whole-image item is described as "<caption>
    (<the image's own description>)", the caption's words join its keywords (lexical search), and the new description
    is embedded in every description space (`text`). Returns False when the image is gone.

    Raises:
        psycopg errors: the database failed (the job retries).
    """
    found = store.analyses.whole_item(image_id)
    caption = " ".join(caption.split())
    if found is None or not caption:
        return False
    item_id, base, keywords = found
    description = f"{caption} ({base})" if base else caption
    words = " ".join(dict.fromkeys(keywords.split() + re.findall(r"\w+", caption.lower())))
    vectors = {s: e.embed_texts([description])[0] for s, e in embedders.items() if e.source == "description"}
    store.analyses.save_caption(item_id, description, words, vectors)
    return True


def analyse_and_store(store: Store, analyser: Any, image_id: int, data: bytes, settings: Any, *, name: str,
                      lines: list[OcrLine] | None = None, embedders: dict[str, Any] | None = None
                      ) -> Analysis | None:
    """Analyse one image's bytes for every task and store the result; None when the image was deleted meanwhile.
    A hosted provider's description becomes the image's caption (`caption_image`, with `embedders`).

    Raises:
        ImageError: the bytes are not a usable image. ProviderError: a hosted provider failed (the job retries).
    """
    image = decode_image(data, max_bytes=settings.index_max_bytes, max_pixels=settings.index_max_pixels, name=name)
    if lines is not None and getattr(analyser, "provider", "") == "local":
        analysis = analyser.analyse(image, list(TASKS), lines=lines)
    else:
        analysis = analyser.analyse(image, list(TASKS))
    if not store.analyses.save(image_id, analysis, analyser.signature):
        return None
    if analysis.provider != "local" and analysis.description and embedders:
        caption_image(store, embedders, image_id, analysis.description)
    return analysis


def analyse_indexed(store: Store, analyser: Any, files: list[tuple[str, str]], settings: Any, *,
                    ocr_done: Callable[[str | None], bool] = lambda enrichment: False,
                    embedders: dict[str, Any] | None = None, progress: bool = True) -> AnalysisRun:
    """Analyse the indexed images among `files` ([(path on this machine, name)]) whose stored analysis is missing or
    was written by another analyser. A file that fails is counted and logged; the pass goes on.

    Args:
        ocr_done: whether an image's `enrichment` signature says its text was read (its stored lines are reused).
    """
    from tqdm import tqdm  # noqa: PLC0415

    from clip_embedder.images import file_sha256  # noqa: PLC0415

    run = AnalysisRun()
    for path, name in tqdm(files, unit="img", desc="analysing", disable=not progress):
        image = store.images.by_sha(file_sha256(path))
        if image is None or store.analyses.signature(image.id) == analyser.signature:
            run.skipped += 1
            continue
        try:
            analyse_and_store(store, analyser, image.id, Path(path).read_bytes(), settings, name=name,
                              lines=stored_lines(store, image.id, ocr_done(image.enrichment)), embedders=embedders)
            run.analysed += 1
        except Exception as e:  # one bad file or provider hiccup must not stop the pass
            log.warning("could not analyse %s: %s", name, e)
            run.failed += 1
    return run
