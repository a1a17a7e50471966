"""A worker outlives its database: a real `python -m clip_embedder.worker` process, a real embedded PostgreSQL
killed with SIGKILL in the middle of the worker's jobs, real COCO128 photos. No API runs: nobody else restarts the
database."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import IMAGENET_LABELS, MOBILENET, ROOT, SHARED, TAGGER_HEAD, YOLO_WEIGHTS, free_port, wait_for

COCO = SHARED / "datasets" / "coco128" / "images"
DOWN_S = 90  # how long the database stays down: three times the pool timeout that used to kill the worker
pytestmark = pytest.mark.slow


class Queue:
    """The test's side of the database: its embedded server (the test owns it), an Ingest to queue uploads."""

    def __init__(self, tmp: Path):
        from clip_embedder.config import Settings
        from clip_embedder.db.store import Store
        from clip_embedder.intake.ingest import Ingest
        from clip_embedder.intake.originals import open_originals
        from clip_embedder.intake.queue import sync_app

        self.tmp = tmp
        self.settings = Settings(_env_file=None, pgdata_dir=tmp / "pgdata", storage_root=str(tmp / "originals"),
                                 spaces=["mobilenet", "text"], ocr="off")
        self.store = Store.open(self.settings)
        self.app = sync_app(self.store.url)
        self.app.open()
        self.ingest = Ingest(self.settings, self.store, open_originals(self.settings.storage_root), self.app)

    def close(self) -> None:
        self.app.close()
        self.store.close()

    def upload(self, paths: list[Path]) -> str:
        from clip_embedder.intake.ingest import validate_upload

        batch, _ = self.ingest.add_uploads([validate_upload(p.read_bytes(), p.name, self.settings) for p in paths])
        return batch

    def sql(self, query: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.store.url, connect_timeout=3) as c:
            return c.execute(query).fetchall()

    def statuses(self, batch: str) -> list[str]:
        return [t.status for t in self.store.tasks.get(batch=batch)]

    def postmaster_pid(self) -> int:
        return int((self.tmp / "pgdata" / "postmaster.pid").read_text().split()[0])


def start_worker(tmp: Path, name: str, metrics_port: int, **env_extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env = {**env, "WORKER_METRICS_PORT": str(metrics_port), "SPACES": "mobilenet,text",
           "DETECTOR_WEIGHTS": str(YOLO_WEIGHTS), "MOBILENET_WEIGHTS": str(MOBILENET),
           "TAGGER_WEIGHTS": str(TAGGER_HEAD), "TAGGER_LABELS": str(IMAGENET_LABELS), "OCR": "off",
           "STORAGE_ROOT": str(tmp / "originals"), "WORKER_CONCURRENCY": "1", "WORKER_HEARTBEAT": "0.5",
           "WORKER_STALLED_AFTER": "30", "WORKER_RETRY_WAIT": "0", **env_extra}
    return subprocess.Popen([sys.executable, "-m", "clip_embedder.worker"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "w"))


def metrics(port: int) -> dict[str, float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {m[1]: float(m[2]) for m in re.finditer(r"^(clip_embedder_worker_database_\w+) ([\d.e+-]+)$", text, re.M)}


def assert_nothing_lost_or_doubled(q: Queue, batch: str, n: int) -> None:
    assert q.statuses(batch) == ["succeeded"] * n, q.statuses(batch)
    assert q.sql("SELECT count(*) FROM images")[0][0] == n
    # one whole-image item per image, and one vector per item in every space
    assert q.sql("SELECT count(*) FROM items WHERE kind = 'image'")[0][0] == n
    items = q.sql("SELECT count(*) FROM items")[0][0]
    for space in ("mobilenet", "text"):
        assert q.sql(f"SELECT count(*) FROM vectors_{space}")[0][0] == items, space


@pytest.fixture
def queue(tmp_path):
    q = Queue(tmp_path)
    yield q
    q.close()


def test_a_worker_waits_out_a_90_s_database_outage_and_finishes_its_jobs(queue, tmp_path):
    """kill -9 of the postmaster while the worker holds a job; the database stays down DOWN_S seconds (longer than
    any pool timeout) and comes back: the same worker process resumes, its held job returns to the queue at once,
    every job succeeds, nothing is indexed twice."""
    port = free_port()
    worker = start_worker(tmp_path, "worker", port, DATABASE_URL=queue.store.url)
    photos = sorted(COCO.glob("*.jpg"))[:12]
    batch = queue.upload(photos)
    try:
        assert wait_for(lambda: queue.statuses(batch).count("succeeded") >= 2
                        and "running" in queue.statuses(batch), 180, every=0.05), queue.statuses(batch)
        os.kill(queue.postmaster_pid(), signal.SIGKILL)
        down_at = time.time()
        assert wait_for(lambda: metrics(port).get("clip_embedder_worker_database_up") == 0.0, 60), \
            "the worker did not notice the outage"
        noticed = time.time() - down_at
        time.sleep(max(0.0, DOWN_S - (time.time() - down_at)))
        assert worker.poll() is None, "the worker died with its database"
        from clip_embedder.db.server import restart_embedded_server

        assert restart_embedded_server(queue.store.url)
        up_at = time.time()
        assert wait_for(lambda: metrics(port).get("clip_embedder_worker_database_up") == 1.0, 60)
        resumed = time.time() - up_at
        assert wait_for(lambda: all(s in ("succeeded", "failed") for s in queue.statuses(batch)), 180), \
            queue.statuses(batch)
        finished = time.time() - up_at
        assert worker.poll() is None, "the same worker process finished the jobs"
        assert_nothing_lost_or_doubled(queue, batch, len(photos))
        m = metrics(port)
        assert m["clip_embedder_worker_database_outages_total"] == 1.0
        assert m["clip_embedder_worker_database_outage_seconds_count"] == 1.0
        log = (tmp_path / "worker.log").read_text()
        assert "the database is not answering" in log and "check that PostgreSQL runs" in log
        print(f"outage noticed after {noticed:.1f} s; database back → worker connected in {resumed:.1f} s, "
              f"all {len(photos)} jobs done {finished:.1f} s after the restart")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "worker.log").read_text()[-3000:]


def test_a_worker_alone_restarts_its_embedded_database(tmp_path):
    """A worker on the embedded PostgreSQL with no API beside it: after kill -9 of the postmaster it starts the
    server again itself and finishes the jobs."""
    port = free_port()
    worker = start_worker(tmp_path, "alone", port, PGDATA_DIR=str(tmp_path / "pgdata"))
    q = None
    try:
        assert wait_for(lambda: (tmp_path / "pgdata" / "postmaster.pid").exists(), 120)
        q = Queue(tmp_path)  # a second user of the worker's embedded server, to queue jobs
        photos = sorted(COCO.glob("*.jpg"))[20:26]
        batch = q.upload(photos)
        assert wait_for(lambda: "succeeded" in q.statuses(batch), 180), q.statuses(batch)
        old = q.postmaster_pid()
        os.kill(old, signal.SIGKILL)
        t = time.time()
        assert wait_for(lambda: _postmaster_alive(tmp_path, old), 60), "the worker did not start the database again"
        restarted = time.time() - t
        assert wait_for(lambda: _done(q, batch), 120), "the jobs did not finish"
        assert worker.poll() is None
        assert_nothing_lost_or_doubled(q, batch, len(photos))
        assert "started it again" in (tmp_path / "alone.log").read_text()
        print(f"embedded database restarted by the worker {restarted:.1f} s after kill -9")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0, (tmp_path / "alone.log").read_text()[-3000:]
        if q is not None:
            q.close()
    # the last user (this test) stops the server the worker started again: no stray postmaster
    assert wait_for(lambda: not _postmaster_alive(tmp_path, -1), 30), "the restarted server outlived its users"


def _postmaster_alive(tmp: Path, old: int) -> bool:
    try:
        pid = int((tmp / "pgdata" / "postmaster.pid").read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return False
    return pid != old


def _done(q: Queue, batch: str) -> bool:
    try:
        return all(s in ("succeeded", "failed") for s in q.statuses(batch))
    except Exception:  # noqa: BLE001 - the test's own pool reconnects after the restart
        return False
