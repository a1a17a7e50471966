"""clip_embedder: object-level visual search (YOLOv5 crops → embeddings → pgvector + FAISS).

Public API:
- `Settings`, `get_settings` — typed settings (env / `.env`).
- `Detector`, `Detection` — YOLOv5 inference from a local weights file.
- `CropPolicy` — padding, minimum side, maximum aspect ratio.
- `create_embedder`, `SpaceIdentity`, `SpaceMismatchError` — embedding spaces.
- `Store` — PostgreSQL + pgvector, the source of truth.
- `SpaceIndex` — the derived FAISS index of a space.
- `Indexer`, `IndexStats` — the indexing pipeline.
- `SearchService`, `QueryError` — image and text search with rank fusion.
"""
from clip_embedder import offline as _offline  # noqa: F401  (before any third-party model import)
from clip_embedder.config import Settings, get_settings
from clip_embedder.crops import CropPolicy

__all__ = ["Settings", "get_settings", "CropPolicy"]
__version__ = "0.1.0"
