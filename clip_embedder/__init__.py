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

Where a change goes (each folder's `__init__` says more):

| folder      | what lives there                                                                           |
|-------------|--------------------------------------------------------------------------------------------|
| `db/`       | the embedded server, migrations, the COPY codec, one repository per concern (`Store`)      |
| `models/`   | detector, embedders (one module per space), tagger, OCR, runtimes; registries by kind      |
| `indexing/` | pipeline records, stage functions and runners; crop policy; descriptions; FAISS; live      |
| `intake/`   | uploads and scans, originals, the queues (index, enrich), the workers and their supervisor |
| `search/`   | the search service; text search as steps; rank fusion; result records                      |
| `scripts/`  | the CLIs (`embed_and_index`, `fetch_assets`)                                               |
"""
from importlib import import_module

from clip_embedder import offline as _offline  # noqa: F401  (before any third-party model import)
from clip_embedder.config import Settings, get_settings
from clip_embedder.indexing.crops import CropPolicy

_LAZY = {
    "Detector": "models.detector", "Detection": "models.detector", "load_detector": "models.detector",
    "create_embedder": "models.embedders", "SpaceIdentity": "models.embedders",
    "SpaceMismatchError": "models.embedders",
    "Store": "db.store", "SpaceIndex": "indexing.faiss_index", "Indexer": "indexing.pipeline",
    "IndexStats": "indexing.pipeline", "SearchService": "search.service", "QueryError": "search.records",
    "rrf_fuse": "search.fusion",
}

__all__ = ["Settings", "get_settings", "CropPolicy", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f"clip_embedder.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'clip_embedder' has no attribute {name!r}")
