"""The search service: loads the models and indexes once; image → objects → neighbours, text → images, fused across
spaces (the text steps are in `clip_embedder.search.text`, the fusion in `clip_embedder.search.fusion`)."""
from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from PIL import Image

from clip_embedder.config import Settings
from clip_embedder.db.store import Store
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.faiss_index import SpaceIndex
from clip_embedder.models.detector import Detector
from clip_embedder.models.embedders import Embedder, create_embedder
from clip_embedder.search.filters import OVERFETCH, ContentFilter
from clip_embedder.search.fusion import fuse_top, one_per_image, space_ranks
from clip_embedder.search.query_parts import query_crops, words_not_embedded
from clip_embedder.search.records import Hit, ImageSearchResult, ObjectResult, QueryError, TextSearchResult
from clip_embedder.search.text import (
    COLOUR,
    COLOUR_WORDS,
    COUNT,
    LEXICAL,
    OCR_PHRASE,
    ImageRanking,
    ParsedQuery,
    best_items,
    content_groups,
    decide,
    nothing_found,
    parse_query,
    phrase_ranking,
    query_terms,
    rank_images,
    sentence_min_groups,
)

log = logging.getLogger(__name__)

NO_FILTER = ContentFilter()
#: the most spaces one query may name (there are three kinds; duplicates are dropped first)
MAX_SPACES_PER_QUERY = 8
#: an object's neighbour list fetches this many times top_k, so that one hit per image still fills it
PER_IMAGE_OVERFETCH = 3


class SearchService:
    """Loads models and indexes once; answers image and text queries. Thread-safe for reads."""

    def __init__(self, settings: Settings, store: Store, detector: Detector, embedders: dict[str, Embedder],
                 indexes: dict[str, SpaceIndex], refused: dict[str, str]):
        self.settings, self.store, self.detector = settings, store, detector
        self.embedders, self.indexes, self.refused = embedders, indexes, refused
        self.policy = CropPolicy(settings.crop_padding, settings.crop_min_side, settings.crop_max_aspect)
        #: lexical matching takes part in text search (benchmarks turn it off to measure dense search alone)
        self.lexical = True
        # the full-text query runs in PostgreSQL while this thread embeds the query and searches FAISS
        self._lexical_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="lexical")

    @classmethod
    def create(cls, settings: Settings, store: Store, detector: Detector) -> "SearchService":
        """Build embedders for the active spaces, check each against its stored identity, load FAISS.

        A space whose stored identity differs from the configured model is *refused* (kept out of
        every query, reported by `refused` and in responses' warnings), never silently mixed.
        """
        embedders: dict[str, Embedder] = {}
        indexes: dict[str, SpaceIndex] = {}
        refused: dict[str, str] = {}
        for space in settings.spaces:
            emb = create_embedder(space, settings)
            try:
                identity = emb.identity
            except (FileNotFoundError, ValueError) as e:
                refused[space] = str(e)
                continue
            stored = store.spaces.get(space)
            if stored is None:  # a fresh database: the space starts empty and fills as photos are added
                store.spaces.ensure(identity)
                stored = identity
            if stored != identity:
                refused[space] = (f"space {space!r} was built by {stored.describe()} but this service is configured "
                                  f"with {identity.describe()}; re-index it or restore the old model")
                log.error(refused[space])
                continue
            try:
                emb.load()
            except RuntimeError as e:  # weights not available offline, a broken checkpoint …
                refused[space] = str(e)
                log.error(refused[space])
                continue
            embedders[space] = emb
            indexes[space] = SpaceIndex.for_settings(store, identity, settings, background=True)
        return cls(settings, store, detector, embedders, indexes, refused)

    # --- helpers -------------------------------------------------------------------------------
    def _spaces(self, requested: list[str] | None, *, text: bool) -> list[str]:
        if requested is not None:
            # `spaces=` (empty) means "all"; the same space twice is searched once
            requested = list(dict.fromkeys(s.strip() for s in requested if s and s.strip()))
            if len(requested) > MAX_SPACES_PER_QUERY:
                raise QueryError(f"{len(requested)} spaces named; a query may name at most {MAX_SPACES_PER_QUERY} "
                                 f"(active: {sorted(self.embedders)})")
        if requested:
            for s in requested:
                if s in self.refused:
                    raise QueryError(f"space {s!r} cannot be queried: {self.refused[s]}", 409)
                if s not in self.embedders:
                    raise QueryError(f"unknown space {s!r}; active spaces: {sorted(self.embedders)}", 422)
            names = requested
        else:
            names = list(self.embedders)
        if text:
            names = [s for s in names if self.embedders[s].supports_text_queries]
        else:
            pixel = [s for s in names if self.embedders[s].source == "pixels"]
            names = pixel or names  # with only the description space, query by the image's description
        if not names:
            kind = "text" if text else "image"
            if requested:
                raise QueryError(f"the requested space(s) {requested} cannot serve a {kind} query; text-capable "
                                 f"spaces: {[s for s, e in self.embedders.items() if e.supports_text_queries]}", 422)
            raise QueryError(f"no active embedding space can serve a {kind} query (active: {sorted(self.embedders)}; "
                             f"refused: {self.refused or 'none'})", 409)
        return names

    def _warnings(self) -> list[str]:
        return [f"space {s} not used: {why}" for s, why in self.refused.items()]

    def _hits_of_lists(self, lists: list[list[tuple[int, float, dict]]]) -> list[list[Hit]]:
        """The hits of several fused lists, each already cut to its top_k ([(item id, fused score, space_ranks)]),
        with one item lookup and one tag lookup for all of them (an image query has a list per object)."""
        rows, tags = self.store.items.get_with_tags(list(dict.fromkeys(key for fused in lists for key, _, _ in fused)))
        out = []
        for fused in lists:
            hits = []
            for key, score, per in fused:
                r = rows.get(key)
                if r is None:  # deleted from Postgres after the FAISS index was loaded
                    continue
                dense = [v["similarity"] for s, v in per.items() if s not in (LEXICAL, OCR_PHRASE, COUNT, COLOUR)]
                hits.append(Hit(item_id=key, image_id=r.image_id, kind=r.kind, label=r.label,
                                detection_score=r.score, bbox=r.bbox,
                                score=round(score, 6), similarity=max(dense) if dense else 1.0,
                                spaces=per, image_size=(r.width, r.height), file_name=r.file_name,
                                tags=tags.get(key, [])))
            out.append(hits)
        return out

    def min_similarity(self, space: str, *, short: bool = False) -> float:
        """The relevance floor of a space's text queries (cosine; TEXT_MIN_SIMILARITY, or TEXT_MIN_SIMILARITY_SHORT
        for a query naming a thing, `text.short_form`; CLIP_MIN_SIMILARITY)."""
        text = self.settings.text_min_similarity_short if short else self.settings.text_min_similarity
        return {"text": text, "clip": self.settings.clip_min_similarity}.get(space, -1.0)

    def _query_vectors(self, space: str, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        emb = self.embedders[space]
        return emb.embed_texts(texts) if emb.source == "description" else emb.embed_images(images)

    # --- queries -------------------------------------------------------------------------------
    def search_image(self, image: Image.Image, *, top_k: int = 10, same_class: bool = False,
                     spaces: list[str] | None = None, content: ContentFilter = NO_FILTER) -> ImageSearchResult:
        """Detect the query's objects; return each object's nearest indexed crops and the whole image's
        nearest indexed images.

        Args:
            image: RGB query image. top_k: results per list (1..100).
            same_class: restrict an object's neighbours to crops with the same detected label.
            spaces: restrict to these spaces (default: all usable image spaces).
            content: keep only neighbours whose image its stored analyses pass (each list fetches
                `OVERFETCH` times top_k first).

        Raises:
            QueryError: a requested space is refused or unknown, or none can serve an image query.
        """
        names = self._spaces(spaces, text=False)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        dets = self.detector.detect([image])[0]
        timings["detect"] = (time.perf_counter() - t) * 1000
        w, h = image.size
        crops, crop_descs, crop_idx, skipped = query_crops(image, dets, self.policy,
                                                           self.settings.query_min_object_fraction)
        t = time.perf_counter()
        vectors = {s: self._query_vectors(s, crops, crop_descs) for s in names}
        timings["embed"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        # object lists fetch more: several crops of one image count once (`one_per_image`)
        k = max(top_k, 1) * (OVERFETCH if content.active else 1) * PER_IMAGE_OVERFETCH
        whole: dict[str, list[tuple[int, float]]] = {}  # space → [(item id, similarity)]
        per_object: list[dict[str, list[tuple[int, float]]]] = [{} for _ in crop_idx]  # the same, per object
        for s in names:
            D, ids = self.indexes[s].search(vectors[s][:1], k, kind="image")
            whole[s] = [(int(i), float(d)) for i, d in zip(ids[0], D[0]) if i >= 0]
            if not crop_idx:
                continue
            if same_class:  # a label filter per object: one search each
                found = [self.indexes[s].search(vectors[s][row:row + 1], k, kind="object", labels=(dets[i].label,))
                         for row, i in enumerate(crop_idx, start=1)]
                D, ids = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
            else:  # every object's neighbours in one batched search
                D, ids = self.indexes[s].search(vectors[s][1:], k, kind="object")
            for n in range(len(crop_idx)):
                per_object[n][s] = [(int(j), float(d)) for j, d in zip(ids[n], D[n]) if j >= 0]
        warnings = self._warnings()
        if content.active:
            self._filter_neighbours(names, [whole, *per_object], content, warnings)
        lists = [fuse_top(whole, top_k)] + [fuse_top(ranked, top_k * PER_IMAGE_OVERFETCH) for ranked in per_object]
        image_hits, *object_hits = self._hits_of_lists(lists)
        object_hits = [one_per_image(hits, top_k) for hits in object_hits]
        per_obj = dict(zip(crop_idx, object_hits))
        objects = [ObjectResult(d, per_obj.get(i, []), skipped.get(i)) for i, d in enumerate(dets)]
        timings["search"] = (time.perf_counter() - t) * 1000
        return ImageSearchResult(w, h, objects, image_hits, names, warnings, timings)

    def _filter_neighbours(self, names: list[str], lists: list[dict[str, list[tuple[int, float]]]],
                           content: ContentFilter, warnings: list[str]) -> None:
        """Drop from each space's neighbour list (item ids, in place) the items whose image `content` leaves out."""
        image_of: dict[int, int] = {}
        for s in names:
            ids = [i for per_space in lists for i, _ in per_space.get(s, [])]
            image_of.update({i: img for i, (img, _) in self.indexes[s].item_images(ids).items()})
        keep, warning = content.passing(self.store, set(image_of.values()))
        if warning:
            warnings.append(warning)
        for per_space in lists:
            for s, lst in per_space.items():
                per_space[s] = [(i, d) for i, d in lst if image_of.get(i) in keep]

    def search_text(self, query: str, *, top_k: int = 10, label: str | None = None,
                    spaces: list[str] | None = None, include_weak: bool = False,
                    content: ContentFilter = NO_FILTER) -> TextSearchResult:
        """Images matching a text query, one hit per image (its best-matching item).

        Hybrid: every text-capable embedding space (CLIP's text tower, the description space) plus lexical
        full-text search over each item's keywords (labels, ImageNet tags with synonyms and hypernyms, OCR
        text), fused with RRF. A phrase in double quotes must appear in the photo's OCR text (case-insensitive).
        A hit is *confident* when it matched a label, a sure tag or OCR text lexically, or reached a space's
        relevance floor (`min_similarity`); the others are dropped (or returned flagged `weak` with
        `include_weak`), and a query with no confident hit returns no hits and a warning saying so. The steps are
        in `clip_embedder.search.text`.

        Args:
            query: non-empty text (at most 1000 characters). top_k: images returned (1..100).
            label: only items with this detected label (an object class name).
            spaces: restrict to these embedding spaces (lexical matching always takes part).
            content: keep only images its stored analyses pass (`sensitive=exclude|only`, `faces=true`).

        Raises:
            QueryError: empty query, or no space can serve a text query.
        """
        parsed = parse_query(query)
        names = self._spaces(spaces, text=True)
        warnings = self._warnings()
        known = self.store.items.labels() if label else []
        if label and label not in known:
            return TextSearchResult([], names, warnings + [
                f"no object in this index is labelled {label!r}; the labels it has: {', '.join(known) or 'none'}"])
        allowed: set[int] | None = None
        if parsed.phrases:
            allowed = set(self.store.lexical.ocr_match(list(parsed.phrases)))
            if not allowed:
                said = " and ".join(f"'{p}'" for p in parsed.phrases)
                return TextSearchResult([], names, warnings + [f"no photo in this index shows the text {said}"])
        dense, lexical = self._text_candidates(parsed, names, top_k=top_k, label=label, allowed=allowed) \
            if parsed.rest else ({}, None)
        ranked = {s: r.ranked for s, r in dense.items()} | ({LEXICAL: lexical.ranked} if lexical else {})
        confident = set().union(*(r.confident for r in dense.values()), lexical.confident if lexical else ())
        whole: dict[int, int] = {}
        if allowed is not None:
            # phrase matches: every photo showing the text, ranked by the rest of the query when there is one
            ranked[OCR_PHRASE] = phrase_ranking(allowed, confident)
            confident |= allowed
            whole = self.store.items.whole_items(sorted(allowed))
        shown: dict[int, int] = {}  # image → the object a colour check found (the hit shows it)
        if parsed.rest:  # counts and colours checked on the detections
            confident = words_not_embedded(self.store.items, parsed, ranked, confident, warnings, shown)
        if content.active:
            ranked, confident = self._filtered(ranked, confident, content, warnings)
        decision = decide(ranked, confident, top_k=top_k, include_weak=include_weak)
        item_of = self._shown_items(decision.chosen, best_items(dense.values(), lexical, whole) | shown)
        per = space_ranks(ranked, [img for img, _ in decision.chosen])
        hits = self._hits_of_lists([[(item_of[img], sc, per[img]) for img, sc in decision.chosen]])[0]
        for h in hits:
            h.weak = h.image_id not in confident
        if not decision.found:
            warnings.append(nothing_found(parsed.text, decision.hidden))
        return TextSearchResult(hits, names, warnings, decision.hidden)

    def _shown_items(self, chosen: list[tuple[int, float]], item_of: dict[int, int]) -> dict[int, int]:
        """`item_of` (image id → the item its hit shows) completed with the whole-image item of each chosen image it
        lacks (one found by a count check alone, outside every signal's candidates)."""
        missing = [img for img, _ in chosen if img not in item_of]
        return item_of | self.store.items.whole_items(missing) if missing else item_of

    def _filtered(self, ranked: dict[str, list[tuple[int, float]]], confident: set[int], content: ContentFilter,
                  warnings: list[str]) -> tuple[dict[str, list[tuple[int, float]]], set[int]]:
        """Each signal's ranking and the confident set without the images `content` leaves out (a warning added
        when some were left out for not being analysed)."""
        keep, warning = content.passing(self.store, {img for lst in ranked.values() for img, _ in lst})
        if warning:
            warnings.append(warning)
        return {s: [(img, sc) for img, sc in lst if img in keep] for s, lst in ranked.items()}, confident & keep

    def _text_candidates(self, parsed: ParsedQuery, names: list[str], *, top_k: int, label: str | None,
                         allowed: set[int] | None) -> tuple[dict[str, ImageRanking], ImageRanking | None]:
        """Each text-capable space's nearest items and the lexical matches of the query's rest, one entry per image
        (a thing it names searched in the description spaces in its canonical form): the full-text query runs in
        PostgreSQL while this thread embeds the query and searches FAISS.

        Returns:
            (space → its `ImageRanking`, the lexical `ImageRanking` or None when nothing matched lexically).
        """
        text, fetch = parsed.rest, max(top_k * 10, 200)
        labels = (label,) if label else None
        terms = [t for t in query_terms(text) if t not in COLOUR_WORDS]  # colours are checked on objects instead
        groups = content_groups(text)
        pending: Future | None = (self._lexical_pool.submit(self.store.lexical.search, terms, fetch, label,
                                                            groups=groups,
                                                            min_groups=sentence_min_groups(parsed, groups))
                                  if self.lexical and terms else None)
        dense: dict[str, ImageRanking] = {}
        # "dogs", "a dog" … → "a photo of a dog": one embedding, one verdict; "two penguins" is searched as a penguin
        canonical = parsed.canonical
        for s in names:
            short = canonical is not None and self.embedders[s].source == "description"
            q = self.embedders[s].embed_texts([canonical if short else text])  # type: ignore[list-item]
            index = self.indexes[s]
            D, ids = index.search(q, fetch, labels=labels)
            valid = [(int(i), float(d)) for i, d in zip(ids[0], D[0]) if i >= 0]
            dense[s] = rank_images(valid, index.item_images([i for i, _ in valid]),
                                   floor=self.min_similarity(s, short=short), allowed=allowed)
        found = pending.result() if pending is not None else []
        if not found:
            return dense, None
        # a match on a label, a sure tag or OCR text is confident; on a less sure tag it only ranks
        rows = {h.item_id: (h.image_id, h.score) for h in found}
        return dense, rank_images([(h.item_id, h.rank) for h in found], rows, floor=float("inf"),
                                  strong=[h.item_id for h in found if h.strong], allowed=allowed)

    def refresh(self, removed: list[int] | None = None, reset: bool = False) -> dict[str, dict[str, int]]:
        """Apply writes made since the indexes were loaded: drop `removed` item ids, add new vectors
        (in place, under each index's write lock). `reset` (a space was dropped) reloads every index.

        Returns:
            space → {"added": n, "removed": n}.
        """
        if reset:
            self.reload()
            return {}
        return {s: ix.sync(self.store, removed or []) for s, ix in self.indexes.items()}

    def save_indexes(self) -> None:
        """Write every index changed in memory to FAISS_DIR (when it still matches Postgres)."""
        for ix in self.indexes.values():
            if ix.dirty:
                ix.save(self.store, self.settings.faiss_dir)

    def reload(self) -> dict[str, str]:
        """Reload each space's FAISS index from Postgres when it is stale (after an indexing run while the
        service was up). Returns space → what happened ("loaded" or "rebuilt: …")."""
        fresh = {s: SpaceIndex.for_settings(self.store, ix.identity, self.settings, background=True)
                 for s, ix in self.indexes.items()}
        self.indexes = fresh  # one assignment: queries in flight keep the old dict
        return {s: ix.rebuilt or "loaded" for s, ix in fresh.items()}

    def health(self) -> dict:
        """Spaces (identity, vectors, FAISS state, staleness), counts, models loaded, refused spaces."""
        counts = self.store.counts()
        captions = self.store.analyses.caption_sources()  # hosted providers' descriptions in the description spaces
        return {
            "counts": counts,
            "spaces": {s: {"model": ix.identity.model, "weights": ix.identity.weights, "dim": ix.identity.dim,
                           "vectors": ix.ntotal, "faiss": ix.rebuilt or "loaded",
                           "stale": counts.get(f"vectors_{s}", 0) != ix.ntotal,
                           "text_queries": self.embedders[s].supports_text_queries,
                           **({"captions": captions} if self.embedders[s].source == "description" else {}),
                           "loaded": self.embedders[s].loaded}
                       for s, ix in self.indexes.items()},
            "refused": self.refused,
            "relevance_floors": {**{s: self.min_similarity(s) for s, e in self.embedders.items()
                                    if e.supports_text_queries},
                                 **{f"{s}:short": self.min_similarity(s, short=True) for s, e in self.embedders.items()
                                    if e.supports_text_queries and e.source == "description"}},
            "detector": {"weights": str(self.detector.weights_path), "sha256": self.detector.weights_sha256,
                         "classes": len(self.detector.names), "class_names": list(self.detector.names),
                         "imgsz": self.detector.imgsz, "runtime": self.detector.runtime,
                         "device": str(self.detector.device),
                         "source": getattr(self.detector, "source", {"weights": str(self.detector.weights_path)})},
        }
