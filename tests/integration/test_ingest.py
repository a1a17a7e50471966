"""Bring your own photos, end to end on real parts: the API under uvicorn on its own embedded
PostgreSQL, real `python -m clip_embedder.worker` processes, real photos from ../shared."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import IMAGENET_LABELS, MOBILENET, ROOT, SHARED, TAGGER_HEAD, YOLO_WEIGHTS, free_port, wait_for

PHOTOS = SHARED / "datasets" / "photos"
COCO = SHARED / "datasets" / "coco128" / "images"
KEY = {"X-API-Key": "ingest-key"}
pytestmark = pytest.mark.slow


class Env:
    """The API (restartable) and its workers, sharing one embedded PostgreSQL."""

    def __init__(self, tmp: Path):
        from clip_embedder.config import Settings

        self.tmp = tmp
        self.scan_root = tmp / "library"
        self.scan_root.mkdir()
        self.settings = Settings(
            _env_file=None, pgdata_dir=tmp / "pgdata", faiss_dir=tmp / "faiss", storage_root=str(tmp / "originals"),
            detector_weights=str(YOLO_WEIGHTS), mobilenet_weights=MOBILENET, spaces=["mobilenet", "text"],
            api_keys=["ingest-key"], scan_roots=[self.scan_root], index_refresh_seconds=1.0,
            tagger_weights=TAGGER_HEAD, tagger_labels=IMAGENET_LABELS, ocr="off")
        self.server = None
        self.workers: list[subprocess.Popen] = []
        self.url = ""

    def start_api(self) -> None:
        import uvicorn

        from api.main import create_app

        port = free_port()
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 120
        while not self.server.started:
            assert time.time() < deadline and self.thread.is_alive(), "the API did not start"
            time.sleep(0.1)
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.db_url = self.app.state.service.store.url

    def stop_api(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.http.close()

    def start_worker(self, metrics_port: int = 0, **extra_env: str) -> subprocess.Popen:
        env = {**os.environ, "WORKER_METRICS_PORT": str(metrics_port), "DATABASE_URL": self.db_url,
               "SPACES": "mobilenet,text",
               "DETECTOR_WEIGHTS": str(YOLO_WEIGHTS), "MOBILENET_WEIGHTS": str(MOBILENET),
               "TAGGER_WEIGHTS": str(TAGGER_HEAD), "TAGGER_LABELS": str(IMAGENET_LABELS), "OCR": "off",
               "STORAGE_ROOT": str(self.tmp / "originals"), "WORKER_CONCURRENCY": "1",
               "WORKER_HEARTBEAT": "0.5", "WORKER_STALLED_AFTER": "3", "WORKER_RETRY_WAIT": "0", **extra_env}
        p = subprocess.Popen([sys.executable, "-m", "clip_embedder.worker"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"worker{len(self.workers)}.log", "w"))
        self.workers.append(p)
        return p

    def stop_workers(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.workers:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    def upload(self, paths: list[Path], headers=KEY) -> httpx.Response:
        return self.http.post("/api/images", headers=headers,
                              files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])

    def wait_batch(self, batch: str, timeout: float = 180) -> dict:
        deadline = time.time() + timeout
        while time.time() < deadline:
            j = self.http.get("/api/tasks", params={"batch": batch}).json()
            if all(t["status"] in ("succeeded", "failed") for t in j["tasks"]):
                return j
            time.sleep(0.2)
        raise AssertionError(f"batch {batch} did not finish: {j}")

    def sql(self, query: str, *args) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.db_url) as c:
            return c.execute(query, args).fetchall()


def serve(tmp: Path) -> Iterator[Env]:
    """An `Env` with its API up for a test module; its workers and API stopped after."""
    e = Env(tmp)
    e.start_api()
    yield e
    e.stop_workers()
    e.stop_api()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("ingest"))


def test_fresh_service_starts_empty(env):
    h = env.http.get("/api/health").json()
    assert h["counts"]["images"] == 0 and set(h["spaces"]) == {"mobilenet", "text"} and not h["refused"]


def test_upload_search_dedupe_delete(env):
    worker = env.start_worker()
    photos = [PHOTOS / "parrot.jpg", PHOTOS / "pets.jpg"]
    r = env.upload(photos)
    assert r.status_code == 202, r.text
    body = r.json()
    assert [t["file_name"] for t in body["tasks"]] == ["parrot.jpg", "pets.jpg"]
    assert all(t["status"] in ("queued", "running") for t in body["tasks"])
    done = env.wait_batch(body["batch"])
    assert [t["status"] for t in done["tasks"]] == ["succeeded", "succeeded"], done
    pets_id = done["tasks"][1]["image_id"]

    # searchable by image, while the API kept running the whole time
    def first_neighbour():
        r = env.http.post("/api/search_image", params={"top_k": 3},
                          files={"file": ("q.jpg", photos[1].read_bytes(), "image/jpeg")}).json()
        return r["image_neighbours"][0] if r["image_neighbours"] else {}
    assert wait_for(lambda: first_neighbour().get("image_id") == pets_id)
    hit = first_neighbour()
    assert hit["similarity"] == pytest.approx(1.0, abs=1e-4) and hit["file_name"] == "pets.jpg"
    # … and by text: the labels the detector found name it
    info = env.http.get(f"/api/images/{pets_id}").json()
    assert info["file_name"] == "pets.jpg" and info["source"] == "upload" and info["objects"]
    label = info["objects"][0]["label"]
    found = env.http.get("/api/search_text", params={"query": label, "top_k": 5}).json()["results"]
    assert pets_id in [h["image_id"] for h in found]
    assert env.http.get(f"/api/images/{pets_id}/file").content == photos[1].read_bytes()

    # the same bytes again (another name): the same image, succeeded at once, no new job
    jobs_before = env.sql("SELECT count(*) FROM procrastinate_jobs")[0][0]
    again = env.http.post("/api/images", headers=KEY,
                          files=[("files", ("copy of pets.jpg", photos[1].read_bytes(), "image/jpeg"))]).json()
    assert again["tasks"][0]["status"] == "succeeded" and again["tasks"][0]["image_id"] == pets_id
    assert env.sql("SELECT count(*) FROM procrastinate_jobs")[0][0] == jobs_before
    assert env.sql("SELECT count(*) FROM images WHERE sha256 = %s", info["sha256"])[0][0] == 1

    # delete: gone from results, from Postgres, from FAISS and from the originals
    item_ids = [o["item_id"] for o in info["objects"]]
    assert env.http.delete(f"/api/images/{pets_id}").status_code == 401
    d = env.http.delete(f"/api/images/{pets_id}", headers=KEY)
    assert d.status_code == 200 and d.json()["original_deleted"] and d.json()["items_removed"] == len(item_ids) + 1
    assert env.http.get(f"/api/images/{pets_id}").status_code == 404
    assert env.http.delete(f"/api/images/{pets_id}", headers=KEY).status_code == 404
    assert wait_for(lambda: first_neighbour().get("image_id") != pets_id)
    assert env.sql("SELECT count(*) FROM items WHERE id = ANY(%s)", item_ids)[0][0] == 0
    for space, ix in env.app.state.service.indexes.items():
        assert not set(item_ids) & set(ix.meta["ids"].tolist()), space
        assert ix.ntotal == env.sql(f"SELECT count(*) FROM vectors_{space}")[0][0]
    assert not list((env.tmp / "originals").rglob(f"{info['sha256']}*"))
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


@pytest.mark.parametrize("case,status,message", [
    ("not an image", 415, "not an image format"),
    ("wrong content type", 415, "is not an image"),
    ("truncated", 422, "truncated"),
    ("empty", 422, "empty"),
    ("over the pixel cap", 413, "MAX_IMAGE_PIXELS"),
])
def test_bad_uploads_are_refused_before_queueing(env, case, status, message):
    good = (COCO / "000000000009.jpg").read_bytes()
    ctype = "image/jpeg"
    data = {"not an image": b"%PDF-1.4 not a picture", "truncated": good[: len(good) // 3],
            "empty": b""}.get(case, good)
    if case == "wrong content type":
        ctype = "text/plain"
    if case == "over the pixel cap":
        buf = io.BytesIO()
        Image.new("L", (8000, 6000)).save(buf, "PNG")
        data, ctype = buf.getvalue(), "image/png"
    tasks_before = env.sql("SELECT count(*) FROM tasks")[0][0]
    jobs_before = env.sql("SELECT count(*) FROM procrastinate_jobs")[0][0]
    # a good file beside the bad one: nothing of the request is queued
    r = env.http.post("/api/images", headers=KEY, files=[("files", ("good.jpg", good, "image/jpeg")),
                                                          ("files", ("bad.jpg", data, ctype))])
    assert r.status_code == status and message in r.json()["detail"], r.text
    assert env.sql("SELECT count(*) FROM tasks")[0][0] == tasks_before
    assert env.sql("SELECT count(*) FROM procrastinate_jobs")[0][0] == jobs_before


def test_health_counts_a_worker_as_soon_as_it_runs(env):
    """/api/health's cached answer (HEALTH_MAX_AGE) never says "no worker" once one is running: with the cache holding
    workers 0, the first answer after the worker's heartbeat row appears counts it."""
    env.stop_workers()
    assert wait_for(lambda: env.sql("SELECT count(*) FROM procrastinate_workers")[0][0] == 0, timeout=30)
    env.http.get("/api/health")
    time.sleep(env.settings.health_max_age + 0.5)
    env.http.get("/api/health")  # a refresh now caches workers 0
    wait_for(lambda: env.http.get("/api/health").json()["workers"] == 0, timeout=10)
    worker = env.start_worker()
    assert wait_for(lambda: env.sql("SELECT count(*) FROM procrastinate_workers")[0][0] >= 1, timeout=120)
    assert env.http.get("/api/health").json()["workers"] >= 1
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_keys_and_scan_roots(env, tmp_path):
    photo = PHOTOS / "owl.jpg"
    assert env.upload([photo], headers={}).status_code == 401
    assert env.upload([photo], headers={"X-API-Key": "nope"}).status_code == 403
    outside = env.http.post("/api/collections/scan", headers=KEY, json={"path": str(tmp_path)})
    assert outside.status_code == 403 and "SCAN_ROOTS" in outside.json()["detail"]
    sneaky = env.http.post("/api/collections/scan", headers=KEY, json={"path": str(env.scan_root / ".." / "..")})
    assert sneaky.status_code == 403
    (env.scan_root / "loop").symlink_to(env.scan_root / "loop")  # a symlink loop, inside the root
    for bad in ("~nosuchuser", str(env.scan_root / "loop"), str(env.scan_root / ("x" * 5000))):
        refused = env.http.post("/api/collections/scan", headers=KEY, json={"path": bad})
        assert refused.status_code == 422 and isinstance(refused.json()["detail"], str), (bad[:40], refused.text)
    assert env.http.post("/api/collections/scan", json={"path": str(env.scan_root)}).status_code == 401
    (env.scan_root / "birds").mkdir()
    for name in ("owl.jpg", "bird.jpg"):
        (env.scan_root / "birds" / name).write_bytes((PHOTOS / name).read_bytes())
    r = env.http.post("/api/collections/scan", headers=KEY, json={"path": str(env.scan_root)})
    assert r.status_code == 202, r.text
    assert sorted(t["file_name"] for t in r.json()["tasks"]) == ["birds/bird.jpg", "birds/owl.jpg"]
    port = free_port()
    worker = env.start_worker(metrics_port=port)
    done = env.wait_batch(r.json()["batch"])
    assert all(t["status"] == "succeeded" for t in done["tasks"]), done
    info = env.http.get(f"/api/images/{done['tasks'][0]['image_id']}").json()
    assert info["source"] == "folder" and info["file_name"].startswith("birds/")
    worker_metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'clip_embedder_worker_jobs_total{outcome="succeeded"} 2.0' in worker_metrics
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)


def test_queue_cap_answers_503(env):
    s = env.app.state.settings
    old = s.queue_max_depth
    s.queue_max_depth = 1
    try:
        r = env.upload([COCO / "000000000025.jpg", COCO / "000000000030.jpg"])
        assert r.status_code == 503 and r.headers["Retry-After"] and "QUEUE_MAX_DEPTH" in r.json()["detail"]
    finally:
        s.queue_max_depth = old


def test_kill_9_mid_job_and_api_restart_lose_nothing(env):
    """Jobs queued while no worker runs survive an API restart; a worker killed with SIGKILL in the middle
    of a job (three times) leaves nothing half-written, and its job runs again to completion."""
    photos = sorted(COCO.glob("*.jpg"))[30:38]
    r = env.upload(photos)
    assert r.status_code == 202
    batch = r.json()["batch"]
    env.stop_api()
    env.start_api()
    assert all(t["status"] == "queued" for t in env.http.get("/api/tasks", params={"batch": batch}).json()["tasks"])
    kills = 0
    killed: set[int] = set()  # procrastinate worker ids of the killed processes
    worker = env.start_worker()
    deadline = time.time() + 240
    while kills < 3 and time.time() < deadline:
        # a job in the hands of the live worker (one at a time: WORKER_CONCURRENCY=1, one process)
        live = {r[0] for r in env.sql("SELECT worker_id FROM procrastinate_jobs WHERE status = 'doing' "
                                      "AND worker_id IS NOT NULL")} - killed
        if live:
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            killed |= live
            kills += 1
            worker = env.start_worker()
        time.sleep(0.01)
    assert kills == 3
    done = env.wait_batch(batch, timeout=240)
    assert [t["status"] for t in done["tasks"]] == ["succeeded"] * len(photos), done
    assert sum(t["attempts"] - 1 for t in done["tasks"]) >= 3  # every killed job ran again
    ids = [t["image_id"] for t in done["tasks"]]
    assert len(set(ids)) == len(photos)
    # no duplicate image, no image without its whole-image item, no item without its vectors
    assert env.sql("SELECT count(*) - count(DISTINCT sha256) FROM images")[0][0] == 0
    assert env.sql("SELECT count(*) FROM images im WHERE (SELECT count(*) FROM items i WHERE i.image_id = im.id "
                   "AND i.kind = 'image') <> 1")[0][0] == 0
    for space in ("mobilenet", "text"):
        assert env.sql(f"SELECT count(*) FROM items i LEFT JOIN vectors_{space} v ON v.item_id = i.id "
                       "WHERE v.item_id IS NULL")[0][0] == 0
    rows = env.sql("SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM items), "
                   "(SELECT count(*) FROM vectors_mobilenet) + (SELECT count(*) FROM vectors_text)")[0]
    print(f"kill -9 x{kills}: {len(photos)} jobs, {sum(t['attempts'] > 1 for t in done['tasks'])} retried "
          f"(attempts {[t['attempts'] for t in done['tasks']]}); checked {rows[0]} images, {rows[1]} items, "
          f"{rows[2]} vectors: no duplicate, none without its vectors")
    # the restarted API followed every write
    assert wait_for(lambda: all(ix.ntotal == env.sql(f"SELECT count(*) FROM vectors_{s}")[0][0]
                                for s, ix in env.app.state.service.indexes.items()))
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=30)


def test_worker_and_cli_stages_write_the_same_rows_and_vectors(env, detector, embedders):
    """The queue worker and the CLI drive the same stage functions: run them here, in-process, on the
    bytes the workers indexed (kill -9 retries included) and compare with what the workers wrote."""
    import numpy as np

    from clip_embedder.indexing.batch import Batch, SourceFile
    from clip_embedder.indexing.crops import CropPolicy
    from clip_embedder.indexing.stages import (
        crop_stage,
        decode_stage,
        describe_stage,
        detect_stage,
        embed_stage,
        read_stage,
        tag_stage,
    )
    from clip_embedder.models.tagger import create_tagger

    photos = sorted(COCO.glob("*.jpg"))[30:38]
    batch = read_stage(Batch([SourceFile.from_folder(p) for p in photos]), max_bytes=10**9)
    batch.to_decode = batch.raw  # plan would skip them: they are indexed
    decode_stage(batch, max_bytes=10**9, max_pixels=10**9)
    detect_stage(batch, detector)
    crop_stage(batch, CropPolicy(), detector_sha256=detector.weights_sha256)
    tagger = create_tagger(env.settings)
    tag_stage(batch, tagger, embedders["mobilenet"])
    describe_stage(batch, tagger)
    embed_stage(batch, {s: embedders[s] for s in ("mobilenet", "text")})
    for row in batch.rows:
        stored = env.sql("SELECT i.id, i.kind, i.label, i.x1, i.y1, i.x2, i.y2, i.crop_x1, i.crop_y1, i.crop_x2, "
                         "i.crop_y2, i.description FROM items i JOIN images im ON im.id = i.image_id "
                         "WHERE im.sha256 = %s ORDER BY i.id", row.sha256)
        assert len(stored) == len(row.items)
        for item, got in zip(row.items, stored):
            assert (item.kind, item.label, item.crop, item.description) == (got[1], got[2], tuple(got[7:11]), got[11])
            assert sorted((t.label, t.score) for t in item.tags) == sorted(
                (r[0], round(r[1], 4)) for r in env.sql("SELECT label, score FROM tags WHERE item_id = %s", got[0]))
            assert np.allclose(item.bbox, got[3:7], atol=1e-3)
            for space in ("mobilenet", "text"):
                vec = np.array(env.sql(f"SELECT embedding::text FROM vectors_{space} WHERE item_id = %s",
                                       got[0])[0][0].strip("[]").split(","), np.float32)
                assert np.allclose(vec, item.vectors[space], atol=1e-5), space


def test_metrics(env):
    text = env.http.get("/metrics").text
    assert 'clip_embedder_queue_jobs{status="succeeded"}' in text
    assert 'clip_embedder_vectors{space="mobilenet"}' in text and "http_requests_total" in text


# --- the OpenAPI schema, property-based (schemathesis), against the live service with a write key --------------
def test_openapi_schema_holds(env):
    """No server error, and every response (status, content type, body) is the one the schema documents,
    for bounded random requests to every operation (writes included, with a valid key)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_url(f"{env.url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 12
    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def run(case):
            # "schema-valid data is accepted" cannot hold for file uploads: the schema says "binary", and
            # random bytes are rightly refused (415/422). Every other default check runs.
            case.call_and_validate(headers=KEY, excluded_checks=[positive_data_acceptance])

        run()


def test_micro_batcher_batches_waiting_jobs_and_fails_files_alone(env, detector, embedders):
    """The worker's runner: jobs submitted together are indexed in one batch; a file that is not an image
    fails alone; a lone job runs at once."""
    from concurrent.futures import ThreadPoolExecutor

    from clip_embedder.indexing.batch import SourceFile
    from clip_embedder.indexing.crops import CropPolicy
    from clip_embedder.indexing.pipeline import Indexer, MicroBatcher

    store = env.app.state.service.store
    indexer = Indexer(store, detector, {s: embedders[s] for s in ("mobilenet", "text")}, CropPolicy(),
                      max_bytes=10**9, max_pixels=10**9)
    sizes: list[int] = []
    batcher = MicroBatcher(indexer, max_batch=8, on_batch=lambda b: sizes.append(len(b.sources)))
    bad = env.tmp / "not_an_image.jpg"
    bad.write_bytes(b"GIF89a nonsense")
    files = [SourceFile.from_folder(p) for p in sorted(COCO.glob("*.jpg"))[60:66]] + [SourceFile.from_folder(bad)]
    with ThreadPoolExecutor(len(files)) as pool:
        outcomes = list(pool.map(batcher.submit, files))
    assert [o.error is None for o in outcomes] == [True] * 6 + [False] and "not an image" in outcomes[-1].error
    assert sum(sizes) == len(files) and max(sizes) > 1  # at least one batch held several jobs
    assert store.images.ids_by_sha([o.sha256 for o in outcomes[:6]]).keys() == {o.sha256 for o in outcomes[:6]}
    assert batcher.submit(files[0]).batch_size == 1  # a lone job waits for nobody (and is skipped: indexed)


def test_the_service_survives_postgres_being_killed(env, monkeypatch):
    """kill -9 of the embedded postmaster: /api/health says so within a second (503, {"detail"},
    Retry-After), other routes answer 503 instead of hanging, the server is started again and the
    service answers as before — without an API restart."""
    import clip_embedder.indexing.live as live

    text = env.http.get("/api/search_text", params={"query": "bird", "top_k": 3})
    assert text.status_code == 200
    restart = live.restart_embedded_server
    monkeypatch.setattr(live, "restart_embedded_server", lambda url: False)  # hold the outage open a while
    pid = int((env.tmp / "pgdata" / "postmaster.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    t = time.perf_counter()
    answers: list = []  # health serves the latest ping, at most DB_PROBE_MAX_AGE (0.5 s) plus one ping old
    assert wait_for(lambda: answers.append(env.http.get("/api/health")) or answers[-1].status_code == 503, 1.5,
                    every=0.05), ([a.status_code for a in answers], time.perf_counter() - t)
    h = answers[-1]
    assert h.headers.get("Retry-After") and "database" in h.json()["detail"]
    t = time.perf_counter()
    down = env.http.get("/api/search_text", params={"query": "bird", "top_k": 3})
    # pooled connections whose backend outlives the postmaster for a moment may still answer: either way no
    # hang and no plain-text 500
    assert down.status_code in (200, 503) and time.perf_counter() - t < 8
    if down.status_code == 503:
        assert down.headers["Retry-After"] and isinstance(down.json()["detail"], str)
    monkeypatch.setattr(live, "restart_embedded_server", restart)
    assert wait_for(lambda: env.http.get("/api/health").status_code == 200, 60), "the database did not come back"
    again = env.http.get("/api/search_text", params={"query": "bird", "top_k": 3})
    assert again.status_code == 200 and again.json()["results"] == text.json()["results"]
