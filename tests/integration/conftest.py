"""The integration tier's fixtures: real COCO128 images, real weights from ../shared, the real embedded PostgreSQL
(helpers and paths are in `tests.helpers`)."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import (
    ANNOTATIONS,
    COCO128,
    IMAGENET_LABELS,
    IMAGES,
    MOBILENET,
    SHARED,
    TAGGER_HEAD,
    YOLO_WEIGHTS,
    extract_coco_subset,
    free_port,
    subset_files,
)

# the detector's ONNX export (DETECTOR_RUNTIME=auto → onnx on the CPU) is cached for the session, outside the
# checkout; subprocesses (workers, the CLI, the API) inherit it
os.environ.setdefault("EXPORT_DIR", tempfile.mkdtemp(prefix="detector_export_"))

if not COCO128.is_dir():
    raise RuntimeError(f"the integration tests need the shared data folder at {SHARED} (set SHARED_DIR); "
                       "`pytest tests/unit` needs none")

TINY_CLIP_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny OpenCLIP config and a checkpoint file of its (seeded, random) weights.

    No CLIP weights are available offline; this exercises the real OpenCLIP loading path
    (config registration + local checkpoint) that users take with a real checkpoint.
    """
    import open_clip
    import torch

    d = tmp_path_factory.mktemp("tiny_clip")
    cfg = d / "tiny-test-clip.json"
    cfg.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(cfg)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip", pretrained=None)
    ckpt = d / "tiny_clip.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    return cfg, ckpt


@pytest.fixture(scope="session")
def subset(tmp_path_factory) -> Path:
    """The default 7-class subset of COCO128 (74 images), built once."""
    ecs = extract_coco_subset()
    out = tmp_path_factory.mktemp("subset")
    return ecs.build(str(ANNOTATIONS), str(IMAGES), out / "coco_subset", ecs.DEFAULT_CLASSES, (0.7, 0.15, 0.15), 0,
                     None, out / "cache", progress=False)


@pytest.fixture(scope="session")
def settings(tmp_path_factory, tiny_clip):
    from clip_embedder.config import Settings

    d = tmp_path_factory.mktemp("state")
    return Settings(_env_file=None, database_url=None, pgdata_dir=d / "pgdata", faiss_dir=d / "faiss",
                    detector_weights=str(YOLO_WEIGHTS), mobilenet_weights=MOBILENET,
                    spaces=["mobilenet", "text", "clip"], clip_model="tiny-test-clip",
                    clip_pretrained=str(tiny_clip[1]), clip_model_config=tiny_clip[0], batch_size=16,
                    api_keys=["test-key"], storage_root=str(d / "originals"), index_refresh_seconds=1.0,
                    tagger_weights=TAGGER_HEAD, tagger_labels=IMAGENET_LABELS, ocr="off",
                    face_weights_dir=SHARED / "models" / "faces")


@pytest.fixture(scope="session")
def store(settings):
    from clip_embedder.db.store import Store

    s = Store.open(settings)
    yield s
    s.close()


@pytest.fixture(scope="session")
def detector(settings):
    from clip_embedder.models.detector import load_detector

    return load_detector(settings)


@pytest.fixture(scope="session")
def embedders(settings):
    from clip_embedder.models.embedders import create_embedder

    return {s: create_embedder(s, settings).load() for s in settings.spaces}




@pytest.fixture(scope="session")
def indexed(settings, store, detector, embedders, subset):
    """The whole subset indexed into the session's embedded Postgres; returns the first run's stats."""
    from clip_embedder.indexing.pipeline import Indexer

    for e in embedders.values():
        store.spaces.ensure(e.identity)
    indexer = Indexer.from_settings(settings, store, detector, embedders)
    return indexer.run(subset_files(subset), batch_size=16, progress=False)


@pytest.fixture(scope="session")
def service(settings, store, detector, indexed):
    from clip_embedder.search.service import SearchService

    return SearchService.create(settings, store, detector)


@pytest.fixture(scope="session")
def client(settings, indexed):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(settings)) as c:
        yield c






@pytest.fixture(scope="session")
def live_api(settings, indexed):
    """The real API served by uvicorn on a free localhost port (for the Streamlit page)."""
    import uvicorn

    from api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 120
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
