"""Shared fixtures: real COCO128 images, real weights from ../shared, the real embedded PostgreSQL."""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared")).resolve()
COCO128 = SHARED / "datasets" / "coco128"
ANNOTATIONS = COCO128 / "annotations" / "instances_coco128_train2017.json"
IMAGES = COCO128 / "images"
YOLO_WEIGHTS = SHARED / "models" / "yolov5" / "yolov5n.pt"
YOLO_STATE_DICT = SHARED / "models" / "yolov5" / "yolov5n_state_dict.pt"
MOBILENET = SHARED / "models" / "mobilenet" / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
TAGGER_HEAD = SHARED / "models" / "mobilenet" / "mobilenet_quant_v1_224_head_layers.tflite"
IMAGENET_LABELS = SHARED / "models" / "mobilenet" / "imagenet_labels.txt"
PHOTOS = SHARED / "datasets" / "photos"

sys.path.insert(0, str(ROOT / "scripts"))
# the detector's ONNX export (DETECTOR_RUNTIME=auto → onnx on the CPU) is cached for the session, outside the
# checkout; subprocesses (workers, the CLI, the API) inherit it
os.environ.setdefault("EXPORT_DIR", tempfile.mkdtemp(prefix="detector_export_"))

if not COCO128.is_dir():
    raise RuntimeError(f"tests need the shared data folder at {SHARED} (set SHARED_DIR)")

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
    import extract_coco_subset as ecs

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
                    tagger_weights=TAGGER_HEAD, tagger_labels=IMAGENET_LABELS, ocr="off")


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


def subset_files(subset: Path) -> list[tuple[Path, str]]:
    return [(p, s) for s in ("train", "val", "test") for p in sorted((subset / s / "images").glob("*.jpg"))]


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


def wait_for(predicate, timeout: float = 20.0, every: float = 0.1) -> bool:
    """Poll `predicate` until it is true (True) or `timeout` seconds pass (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def gt_classes(subset: Path) -> dict[str, set[str]]:
    """file name → set of annotated class names (all splits of the subset)."""
    out: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        d = json.loads((subset / "annotations" / f"instances_{split}.json").read_text())
        cats = {c["id"]: c["name"] for c in d["categories"]}
        names = {im["id"]: im["file_name"] for im in d["images"]}
        for a in d["annotations"]:
            out.setdefault(names[a["image_id"]], set()).add(cats[a["category_id"]])
    return out
