"""Ingest through the queue vs the CLI, and upload-to-searchable latency.

Side by side in one run, on the same COCO128 images and the same models (spaces mobilenet + text):
- the CLI's sequential runner (`Indexer.run`, batches of 16, models already loaded): images/s;
- the API + queue + 1 and 2 `python -m clip_embedder.worker` processes (already started and idle):
  images/s from the upload's response to the last task succeeded, and the ratio to the CLI;
- single uploads on an idle system (1 worker): seconds from the upload's response to the first image
  search that returns the photo (similarity 1.0), p50 / p95;
- with OCR on (`OCR`, `ENRICH` from the environment, as the workers read them): photos with a word rendered onto
  them, each timed from its upload to the first quoted query for the word that ranks it first.

    OCR=rapidocr ENRICH=queue python benchmarks/bench_ingest.py [--images 64] [--latency-samples 10]
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, SHARED, bench_settings, machine, pct

COCO = SHARED / "datasets" / "coco128" / "images"


class Service:
    """The API under uvicorn (in this process) on a fresh embedded PostgreSQL, plus worker processes."""

    def __init__(self, work: Path, spaces: str):
        import httpx
        import uvicorn

        from api.main import create_app

        self.work = work
        from pydantic import SecretStr

        self.settings = bench_settings(work, spaces, None, None).model_copy(update={
            "api_keys": [SecretStr("bench")], "storage_root": str(work / "originals"), "index_refresh_seconds": 1.0})
        import socket

        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        self.app = create_app(self.settings)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.1)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        self.db_url = self.app.state.service.store.url
        self.workers: list[subprocess.Popen] = []

    def start_workers(self, n: int) -> None:
        env = {**os.environ, "DATABASE_URL": self.db_url, "SPACES": ",".join(self.settings.spaces),
               "DETECTOR_WEIGHTS": self.settings.detector_weights,
               "MOBILENET_WEIGHTS": str(self.settings.mobilenet_weights),
               "TAGGER_WEIGHTS": str(self.settings.tagger_weights), "TAGGER_LABELS": str(self.settings.tagger_labels),
               "STORAGE_ROOT": self.settings.storage_root}
        for _ in range(n):
            self.workers.append(subprocess.Popen([sys.executable, "-m", "clip_embedder.worker"], cwd=ROOT, env=env,
                                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        while self.http.get("/api/health").json().get("workers", 0) < 2 * n:  # indexing + enrichment per process
            dead = [w for w in self.workers if w.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited ({dead[0].returncode}) before it was ready: run "
                                   "`python -m clip_embedder.worker` with the same settings to see why")
            time.sleep(0.2)

    def upload(self, paths: list[Path]) -> dict:
        r = self.http.post("/api/images", headers={"X-API-Key": "bench"},
                           files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in paths])
        r.raise_for_status()
        return r.json()

    def wait_batch(self, batch: str) -> dict:
        while True:
            j = self.http.get("/api/tasks", params={"batch": batch}).json()
            if all(t["status"] in ("succeeded", "failed") for t in j["tasks"]):
                return j
            time.sleep(0.25)  # a client polling; the API shares the CPUs with the workers

    def close(self) -> None:
        for p in self.workers:
            p.send_signal(signal.SIGTERM)
        for p in self.workers:
            p.wait(timeout=60)
        self.server.should_exit = True
        self.thread.join(timeout=60)  # the lifespan's shutdown releases the embedded server (stops with its last user)


def cli_rate(work: Path, spaces: str, files: list[Path]) -> float:
    from clip_embedder.db.store import Store
    from clip_embedder.indexing.batch import SourceFile
    from clip_embedder.indexing.pipeline import Indexer
    from clip_embedder.models.detector import load_detector
    from clip_embedder.models.embedders import create_embedder

    s = bench_settings(work, spaces, None, None)
    detector = load_detector(s)
    embedders = {n: create_embedder(n, s).load() for n in s.spaces}
    store = Store.open(s)
    for e in embedders.values():
        store.spaces.ensure(e.identity)
    stats = Indexer.from_settings(s, store, detector, embedders).run(
        [SourceFile.from_folder(f) for f in files], batch_size=16, progress=False)
    store.close()
    print(f"  CLI: {stats.summary()}")
    return stats.indexed / stats.seconds


def queue_rate(work: Path, spaces: str, files: list[Path], workers: int) -> float:
    svc = Service(work, spaces)
    try:
        svc.start_workers(workers)
        t0 = time.perf_counter()
        batch = svc.upload(files)["batch"]
        t_up = time.perf_counter() - t0
        done = svc.wait_batch(batch)
        secs = time.perf_counter() - t0
        ok = sum(t["status"] == "succeeded" for t in done["tasks"])
        print(f"  queue, {workers} worker(s): {ok}/{len(files)} succeeded in {secs:.2f}s "
              f"(upload + validation {t_up:.2f}s), {ok / secs:.2f} images/s")
        return ok / secs
    finally:
        svc.close()


def latency(work: Path, spaces: str, files: list[Path]) -> list[float]:
    svc = Service(work, spaces)
    out = []
    try:
        svc.start_workers(1)
        for f in files:
            data = f.read_bytes()
            svc.upload([f])
            t0 = time.perf_counter()
            while True:
                r = svc.http.post("/api/search_image", params={"top_k": 1},
                                  files={"file": (f.name, data, "image/jpeg")}).json()
                n = r["image_neighbours"]
                if n and n[0]["similarity"] > 0.9999 and n[0]["file_name"] == f.name:
                    break
                time.sleep(0.02)
            out.append(time.perf_counter() - t0)
            time.sleep(0.5)  # idle between uploads
    finally:
        svc.close()
    return out


SIGN_WORDS = ["PHARMACY", "BAKERY", "HOTEL", "GARAGE", "LIBRARY", "MUSEUM", "STATION", "MARKET"]


def text_latency(work: Path, spaces: str, photos: list[Path]) -> list[float]:
    """Upload → found by the text in it: photos with a word rendered onto them uploaded one at a time, each timed
    until a quoted query for its word ranks it first (OCR inline in the indexing job, or its follow-up job)."""
    from tests.helpers import FONTS, render_sign

    svc = Service(work, spaces)
    out = []
    try:
        svc.start_workers(1)
        for word, photo in zip(SIGN_WORDS, photos):
            sign = work / f"sign_{word.lower()}.jpg"
            render_sign(photo, word, sign, FONTS["en"])
            svc.upload([sign])
            t0 = time.perf_counter()
            while True:
                hits = svc.http.get("/api/search_text", params={"query": f'"{word.lower()}"', "top_k": 1}).json()
                if hits.get("results") and hits["results"][0]["file_name"] == sign.name:
                    break
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"{sign.name} was not found by its text in 300 s")
                time.sleep(0.05)
            out.append(time.perf_counter() - t0)
            time.sleep(0.5)
    finally:
        svc.close()
    return out


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64, help="images per throughput run (distinct COCO128 files)")
    p.add_argument("--latency-samples", type=int, default=10, help="single uploads timed to searchable")
    p.add_argument("--spaces", default="mobilenet,text")
    args = p.parse_args()
    files = sorted(COCO.glob("*.jpg"))[: args.images]
    print(f"machine: {machine()}")
    print(f"images: {len(files)} from {COCO}, spaces {args.spaces}")
    root = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    cli = cli_rate(root / "cli", args.spaces, files)
    q1 = queue_rate(root / "q1", args.spaces, files, 1)
    q2 = queue_rate(root / "q2", args.spaces, files, 2)
    lat = latency(root / "lat", args.spaces, sorted(COCO.glob("*.jpg"))[-args.latency_samples:])
    print(f"CLI (sequential, batch 16):   {cli:.2f} images/s")
    print(f"queue, 1 worker:              {q1:.2f} images/s = {q1 / cli:.2f}x the CLI")
    print(f"queue, 2 workers:             {q2:.2f} images/s = {q2 / cli:.2f}x the CLI")
    print(f"upload → searchable (1 worker, idle, n={len(lat)}): p50 {statistics.median(lat):.2f}s "
          f"p95 {pct(lat, 95):.2f}s max {max(lat):.2f}s")
    if os.environ.get("OCR", "rapidocr") != "off":
        words = text_latency(root / "words", args.spaces, sorted(COCO.glob("*.jpg"))[-args.latency_samples - 8:])
        print(f"upload → found by its text (OCR={os.environ.get('OCR', 'rapidocr')}, "
              f"ENRICH={os.environ.get('ENRICH', 'queue')}, n={len(words)}): p50 {statistics.median(words):.2f}s "
              f"p95 {pct(words, 95):.2f}s max {max(words):.2f}s")


if __name__ == "__main__":
    main()
