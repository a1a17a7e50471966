"""clip_embedder: object-level visual search (YOLOv5 crops → embeddings → pgvector + FAISS).

Public API (heavy modules load on first use, so `clip_embedder.config` stays light):
- `Settings`, `get_settings` — typed settings (env / `.env`).
- `Detector`, `Detection`, `load_detector` — YOLOv5 inference from a local file or an MLflow run.
- `CropPolicy` — padding, minimum side, maximum aspect ratio.
- `create_embedder`, `SpaceIdentity`, `SpaceMismatchError` — embedding spaces.
- `Store` — PostgreSQL + pgvector, the source of truth.
- `SpaceIndex` — the derived FAISS index of a space.
- `Indexer`, `IndexStats` — the indexing pipeline.
- `SearchService`, `QueryError`, `rrf_fuse` — image and text search with rank fusion.
"""
from importlib import import_module

from clip_embedder import offline as _offline  # noqa: F401  (before any third-party model import)
from clip_embedder.config import Settings, get_settings
from clip_embedder.crops import CropPolicy

_LAZY = {
    "Detector": "detector", "Detection": "detector",
    "create_embedder": "embedders", "SpaceIdentity": "embedders", "SpaceMismatchError": "embedders",
    "Store": "store", "SpaceIndex": "faiss_index", "Indexer": "pipeline", "IndexStats": "pipeline",
    "SearchService": "search", "QueryError": "search", "rrf_fuse": "search", "load_detector": "search",
}

__all__ = ["Settings", "get_settings", "CropPolicy", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"clip_embedder.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'clip_embedder' has no attribute {name!r}")
