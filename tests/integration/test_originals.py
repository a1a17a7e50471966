"""Uploaded originals: content-addressed storage in a folder and in GCS (through the local emulator),
and a worker job that reads its original from GCS."""
from __future__ import annotations

import pytest

from tests.helpers import IMAGENET_LABELS, MOBILENET, SHARED, TAGGER_HEAD, YOLO_WEIGHTS, free_port

PHOTO = SHARED / "datasets" / "photos" / "owl.jpg"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A GCS emulator with a bucket; yields the gs:// root."""
    import os

    from gcp_storage_emulator.server import create_server
    from google.cloud import storage

    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    old = {k: os.environ.get(k) for k in ("STORAGE_EMULATOR_HOST", "GOOGLE_CLOUD_PROJECT")}
    os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
    os.environ["GOOGLE_CLOUD_PROJECT"] = "test"
    storage.Client().create_bucket("photos")
    yield "gs://photos/originals"
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("kind", ["folder", "gcs"])
def test_store_once_read_delete(kind, tmp_path, request):
    from clip_embedder.images import sha256_bytes
    from clip_embedder.intake.originals import open_originals, original_key

    root = str(tmp_path / "originals") if kind == "folder" else request.getfixturevalue("gcs")
    store = open_originals(root)
    data = PHOTO.read_bytes()
    key = original_key(sha256_bytes(data), "JPEG")
    assert key.endswith(".jpg") and key.startswith(sha256_bytes(data)[:2] + "/")
    assert not store.exists(key)
    store.put(key, data)
    store.put(key, data)  # idempotent
    assert store.exists(key) and store.get(key) == data
    store.delete(key)
    store.delete(key)  # absent: no error
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.get(key)


def test_folder_keys_cannot_leave_the_root(tmp_path):
    from clip_embedder.intake.originals import LocalOriginals

    with pytest.raises(ValueError, match="leaves the storage root"):
        LocalOriginals(tmp_path).get("../../etc/passwd")


def test_worker_job_reads_its_original_from_gcs(gcs, tmp_path):
    """The worker's job function (the code procrastinate runs) on an upload stored in GCS."""
    from clip_embedder.config import Settings
    from clip_embedder.images import sha256_bytes
    from clip_embedder.intake.ingest import Ingest, validate_upload
    from clip_embedder.intake.originals import open_originals
    from clip_embedder.intake.worker import IndexWorker

    s = Settings(_env_file=None, pgdata_dir=tmp_path / "pg", faiss_dir=tmp_path / "faiss", storage_root=gcs,
                 detector_weights=str(YOLO_WEIGHTS), mobilenet_weights=MOBILENET, spaces=["mobilenet", "text"],
                 tagger_weights=TAGGER_HEAD, tagger_labels=IMAGENET_LABELS, ocr="rapidocr")
    worker = IndexWorker(s)
    try:
        upload = validate_upload(PHOTO.read_bytes(), "owl.jpg", s)
        from clip_embedder.intake.queue import sync_app

        app = sync_app(worker.store.url)
        with app.open():
            batch, tasks = Ingest(s, worker.store, open_originals(gcs), app).add_uploads([upload])
        with worker.store.conn() as c:
            job_kwargs = c.execute("SELECT args FROM procrastinate_jobs WHERE id = %s",
                                   (tasks[0].job_id,)).fetchone()["args"]
        assert job_kwargs["storage"] == "originals" and job_kwargs["path"].startswith(upload.sha256[:2])
        out = worker.index_image(**job_kwargs)
        image = worker.store.images.by_sha(sha256_bytes(PHOTO.read_bytes()))
        assert out["image_id"] == image.id and image.file_name == "owl.jpg"
        detail = worker.store.images.get(image.id)  # the worker tags like the CLI; the text is read after
        assert detail.tags[detail.image_item_id] and image.enrichment == worker.indexer.enrichment
        task = worker.store.tasks.get(task_id=tasks[0].id)[0]
        assert task.image_id == image.id and task.ocr == "queued"
        # idempotent: a job that runs twice writes once (and queues its enrichment once)
        assert worker.index_image(**job_kwargs) == {"image_id": image.id, "objects": 0, "batch": 1}
        assert worker.store.counts()["images"] == 1
        # the follow-up job reads the original from GCS too, and stamps the image read
        assert worker.enrich_image(**job_kwargs) == {"image_id": image.id, "batch": 1}
        assert worker.store.images.by_sha(image.sha256).enrichment == worker.enricher.enrichment
        assert worker.enrich_image(**job_kwargs) == {"skipped": "already enriched"}
        assert worker.store.counts()["images"] == 1
    finally:
        worker.store.close()
