"""The search service: image → objects → neighbours, text → images, fused across spaces.

Fusion is reciprocal rank fusion, score(d) = Σ_spaces 1 / (k + rank_space(d)) with k = 60 and
ranks starting at 1 (Cormack, Clarke & Büttcher, "Reciprocal Rank Fusion outperforms Condorcet
and individual rank learning methods", SIGIR 2009).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from clip_embedder.config import Settings
from clip_embedder.crops import CropPolicy
from clip_embedder.detector import Detection, Detector
from clip_embedder.embedders import Embedder, SpaceMismatchError, create_embedder, describe_detections, describe_object
from clip_embedder.faiss_index import SpaceIndex
from clip_embedder.store import Store

log = logging.getLogger(__name__)

RRF_K = 60
#: the most spaces one query may name (there are three kinds; duplicates are dropped first)
MAX_SPACES_PER_QUERY = 8


class QueryError(ValueError):
    """A query the index cannot serve (empty text, no usable space…). `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


@dataclass
class Hit:
    """One search result: an indexed item (a whole image or an object crop) and how it was found.

    `score` is the fused RRF score; `similarity` the best cosine similarity over the spaces that
    found it; `spaces` maps space → {"rank": 1-based rank, "similarity": cosine}.
    """

    item_id: int
    image_id: int
    kind: str
    label: str | None
    detection_score: float | None
    bbox: tuple[float, float, float, float]
    score: float
    similarity: float
    spaces: dict[str, dict[str, float]] = field(default_factory=dict)
    image_size: tuple[int, int] = (0, 0)  # (width, height) of the indexed image, pixels
    file_name: str = ""  # the upload's name or the path relative to the indexed folder


@dataclass
class ObjectResult:
    """A detected object of the query image and its nearest indexed crops (empty when not cropped)."""

    detection: Detection
    neighbours: list[Hit]
    skipped: str | None = None


@dataclass
class ImageSearchResult:
    """An image query's answer. Sizes in pixels; `timings_ms` per stage (detect, embed, search)."""

    width: int
    height: int
    objects: list[ObjectResult]
    image_neighbours: list[Hit]
    spaces: list[str]
    warnings: list[str]
    timings_ms: dict[str, float]


def rrf_fuse(ranked: dict[str, list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float, dict]]:
    """Reciprocal rank fusion of per-space ranked lists.

    Args:
        ranked: space → [(key, similarity)] best first (keys may repeat across spaces).
        k: the RRF constant (60 in the original paper).

    Returns:
        [(key, fused score, {space: {"rank", "similarity"}})] by descending score; ties broken by
        best similarity, then key.
    """
    fused: dict[int, float] = {}
    per: dict[int, dict] = {}
    for space, lst in ranked.items():
        for rank, (key, sim) in enumerate(lst, start=1):
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
            per.setdefault(key, {})[space] = {"rank": rank, "similarity": round(float(sim), 6)}
    best = {key: max(v["similarity"] for v in per[key].values()) for key in per}
    order = sorted(fused, key=lambda key: (-fused[key], -best[key], key))
    return [(key, fused[key], per[key]) for key in order]


class SearchService:
    """Loads models and indexes once; answers image and text queries. Thread-safe for reads."""

    def __init__(self, settings: Settings, store: Store, detector: Detector, embedders: dict[str, Embedder],
                 indexes: dict[str, SpaceIndex], refused: dict[str, str]):
        self.settings, self.store, self.detector = settings, store, detector
        self.embedders, self.indexes, self.refused = embedders, indexes, refused
        self.policy = CropPolicy(settings.crop_padding, settings.crop_min_side, settings.crop_max_aspect)

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
            stored = store.get_space(space)
            if stored is None:  # a fresh database: the space starts empty and fills as photos are added
                store.ensure_space(identity)
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
            indexes[space] = SpaceIndex.for_settings(store, identity, settings)
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

    def _hits(self, fused: list[tuple[int, float, dict]], top_k: int) -> list[Hit]:
        fused = fused[:top_k]
        rows = self.store.get_items([key for key, _, _ in fused])
        hits = []
        for key, score, per in fused:
            r = rows.get(key)
            if r is None:  # deleted from Postgres after the FAISS index was loaded
                continue
            hits.append(Hit(item_id=key, image_id=r.image_id, kind=r.kind, label=r.label,
                            detection_score=r.score, bbox=r.bbox,
                            score=round(score, 6), similarity=max(v["similarity"] for v in per.values()),
                            spaces=per, image_size=(r.width, r.height), file_name=r.file_name))
        return hits

    def _query_vectors(self, space: str, images: list[Image.Image], texts: list[str]) -> np.ndarray:
        emb = self.embedders[space]
        return emb.embed_texts(texts) if emb.source == "description" else emb.embed_images(images)

    # --- queries -------------------------------------------------------------------------------
    def search_image(self, image: Image.Image, *, top_k: int = 10, same_class: bool = False,
                     spaces: list[str] | None = None) -> ImageSearchResult:
        """Detect the query's objects; return each object's nearest indexed crops and the whole image's
        nearest indexed images.

        Args:
            image: RGB query image. top_k: results per list (1..100).
            same_class: restrict an object's neighbours to crops with the same detected label.
            spaces: restrict to these spaces (default: all usable image spaces).

        Raises:
            QueryError: a requested space is refused or unknown, or none can serve an image query.
        """
        names = self._spaces(spaces, text=False)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        dets = self.detector.detect([image])[0]
        timings["detect"] = (time.perf_counter() - t) * 1000
        w, h = image.size
        crops, crop_descs, crop_idx, skipped = [image], [describe_detections([d.label for d in dets])], [], {}
        for i, d in enumerate(dets):
            box = self.policy.crop_box(d.bbox, w, h)
            if box is None:
                skipped[i] = "crop too small or too elongated for the crop policy"
                continue
            crops.append(image.crop(box))
            crop_descs.append(describe_object(d.label))
            crop_idx.append(i)
        t = time.perf_counter()
        vectors = {s: self._query_vectors(s, crops, crop_descs) for s in names}
        timings["embed"] = (time.perf_counter() - t) * 1000
        t = time.perf_counter()
        k = max(top_k, 1)
        whole = {}
        for s in names:
            D, ids = self.indexes[s].search(vectors[s][:1], k, kind="image")
            whole[s] = [(int(i), float(d)) for i, d in zip(ids[0], D[0]) if i >= 0]
        image_hits = self._hits(rrf_fuse(whole), top_k)
        objects: list[ObjectResult] = []
        per_obj: dict[int, list[Hit]] = {}
        for row, i in enumerate(crop_idx, start=1):
            ranked = {}
            labels = (dets[i].label,) if same_class else None
            for s in names:
                D, ids = self.indexes[s].search(vectors[s][row:row + 1], k, kind="object", labels=labels)
                ranked[s] = [(int(j), float(d)) for j, d in zip(ids[0], D[0]) if j >= 0]
            per_obj[i] = self._hits(rrf_fuse(ranked), top_k)
        for i, d in enumerate(dets):
            objects.append(ObjectResult(d, per_obj.get(i, []), skipped.get(i)))
        timings["search"] = (time.perf_counter() - t) * 1000
        return ImageSearchResult(w, h, objects, image_hits, names, self._warnings(), timings)

    def search_text(self, query: str, *, top_k: int = 10, label: str | None = None,
                    spaces: list[str] | None = None) -> tuple[list[Hit], list[str], list[str]]:
        """Images matching a text query, one hit per image (its best-matching item).

        Uses every text-capable space (CLIP's text tower, the description space) and fuses their
        per-image rankings with RRF.

        Args:
            query: non-empty text (at most 1000 characters). top_k: images returned (1..100).
            label: only items with this detected label (an object class name).
            spaces: restrict to these spaces.

        Returns:
            (hits, spaces used, warnings).

        Raises:
            QueryError: empty query, or no space can serve a text query.
        """
        query = (query or "").strip()
        if not query:
            raise QueryError("query is empty: type a few words, e.g. 'a red handbag'")
        if len(query) > 1000:
            raise QueryError("query is longer than 1000 characters")
        names = self._spaces(spaces, text=True)
        labels = (label,) if label else None
        fetch = max(top_k * 10, 200)
        ranked: dict[str, list[tuple[int, float]]] = {}
        best_item: dict[int, tuple[float, int]] = {}  # image id → (similarity, item id)
        image_of: dict[int, int] = {}
        for s in names:
            q = self.embedders[s].embed_texts([query])
            D, ids = self.indexes[s].search(q, fetch, labels=labels)
            valid = [(int(i), float(d)) for i, d in zip(ids[0], D[0]) if i >= 0]
            rows = self.store.get_items([i for i, _ in valid])
            image_of.update({i: r.image_id for i, r in rows.items()})
            # many crops share one description (same label): among equal similarities, surer detections first
            valid.sort(key=lambda t: (-round(t[1], 4), -(getattr(rows.get(t[0]), "score", None) or 0.0)))
            per_image: list[tuple[int, float]] = []
            seen: set[int] = set()
            for item_id, sim in valid:
                img = image_of.get(item_id)
                if img is None or img in seen:
                    continue
                seen.add(img)
                per_image.append((img, sim))
                if sim > best_item.get(img, (-2.0, 0))[0]:
                    best_item[img] = (sim, item_id)
            ranked[s] = per_image
        # one hit per image: the image's best-matching item carries the image's fused score
        fused = [(best_item[img][1], score, per) for img, score, per in rrf_fuse(ranked)[:top_k]]
        return self._hits(fused, top_k), names, self._warnings()

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
        fresh = {s: SpaceIndex.for_settings(self.store, ix.identity, self.settings)
                 for s, ix in self.indexes.items()}
        self.indexes = fresh  # one assignment: queries in flight keep the old dict
        return {s: ix.rebuilt or "loaded" for s, ix in fresh.items()}

    def health(self) -> dict:
        """Spaces (identity, vectors, FAISS state, staleness), counts, models loaded, refused spaces."""
        counts = self.store.counts()
        return {
            "counts": counts,
            "spaces": {s: {"model": ix.identity.model, "weights": ix.identity.weights, "dim": ix.identity.dim,
                           "vectors": ix.ntotal, "faiss": ix.rebuilt or "loaded",
                           "stale": counts.get(f"vectors_{s}", 0) != ix.ntotal,
                           "text_queries": self.embedders[s].supports_text_queries,
                           "loaded": self.embedders[s].loaded}
                       for s, ix in self.indexes.items()},
            "refused": self.refused,
            "detector": {"weights": str(self.detector.weights_path), "sha256": self.detector.weights_sha256,
                         "classes": len(self.detector.names), "imgsz": self.detector.imgsz,
                         "device": str(self.detector.device),
                         "source": getattr(self.detector, "source", {"weights": str(self.detector.weights_path)})},
        }


def load_detector(settings: Settings) -> Detector:
    """The detector named by the settings: `MODEL_URI` / `MLFLOW_RUN_ID` (through MLflow) or `DETECTOR_WEIGHTS`.

    Raises:
        FileNotFoundError: no weights at DETECTOR_WEIGHTS. RuntimeError: MLflow resolution failed.
        ValueError: weights from MLflow that are a pickle, not the state-dict format.
    """
    weights: str | Path = settings.detector_weights
    source: dict = {"weights": str(weights)}
    from_server = bool(settings.model_uri or settings.mlflow_run_id)
    if from_server:
        from clip_embedder.registry import fetch_detector_weights  # noqa: PLC0415

        fetched = fetch_detector_weights(settings)
        weights, source = fetched.path, fetched.describe()
    # weights from a tracking server are never unpickled (whoever can write there would run code here)
    detector = Detector.load(weights, imgsz=settings.detector_imgsz, conf=settings.detector_conf,
                             iou=settings.detector_iou, max_det=settings.detector_max_det, device=settings.device,
                             allow_pickle=not from_server)
    detector.source = source
    return detector


__all__ = ["Hit", "ImageSearchResult", "ObjectResult", "QueryError", "SearchService", "SpaceMismatchError",
           "load_detector", "rrf_fuse"]
