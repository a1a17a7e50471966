"""Searchable first, read after: a worker with OCR on (ENRICH=queue) writes a photo searchable without reading its
text, then reads it in a follow-up job on the `enrich` queue — real RapidOCR, a real worker process, the API under
uvicorn on its embedded PostgreSQL, a COCO128 photo with a sign rendered onto it."""
from __future__ import annotations

import signal

import pytest

from tests.helpers import FONTS, IMAGES, render_sign, wait_for
from tests.integration.test_ingest import serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("enrich"))


def test_a_photo_is_searchable_before_its_text_is_read_then_found_by_it(env):
    sign = env.tmp / "sign_en.jpg"
    render_sign(IMAGES / "000000000049.jpg", "PHARMACY", sign, FONTS["en"])
    plain = IMAGES / "000000000009.jpg"
    worker = env.start_worker(OCR="rapidocr", ENRICH="queue", ENRICH_CONCURRENCY="1")
    up = env.upload([sign, plain])
    assert up.status_code == 202, up.text
    batch = up.json()["batch"]
    done = env.wait_batch(batch, timeout=240)
    assert [t["status"] for t in done["tasks"]] == ["succeeded", "succeeded"], done
    ids = {t["file_name"]: t["image_id"] for t in done["tasks"]}
    first = env.http.get(f"/api/images/{ids['sign_en.jpg']}").json()
    assert first["objects"] and first["enrichments"]["ocr"] in ("queued", "running", "done")
    if first["enrichments"]["ocr"] != "done":  # searchable with its objects, its text not read yet
        assert first["ocr"] == []
    # the follow-up jobs read the text; nothing is indexed twice
    assert wait_for(lambda: all(t["enrichments"].get("ocr") == "done" for t in env.http.get(
        "/api/tasks", params={"batch": batch}).json()["tasks"]), 240), env.http.get(
        "/api/tasks", params={"batch": batch}).json()
    info = env.http.get(f"/api/images/{ids['sign_en.jpg']}").json()
    assert info["enrichments"] == {"ocr": "done"} and "PHARMACY" in " ".join(ln["text"] for ln in info["ocr"])
    assert len(info["objects"]) == len(first["objects"])
    hits = env.http.get("/api/search_text", params={"query": '"pharmacy"', "top_k": 3}).json()["results"]
    assert hits and hits[0]["image_id"] == ids["sign_en.jpg"], hits
    # the enrichment job started once the image was written (searchable), deferred by its indexing job
    order = env.sql("SELECT j.queue_name, min(e.at) FILTER (WHERE e.type = 'started'), im.created_at "
                    "FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id "
                    "JOIN images im ON im.sha256 = j.args->>'sha256' WHERE j.args->>'file_name' = 'sign_en.jpg' "
                    "GROUP BY j.id, j.queue_name, im.created_at ORDER BY j.id")
    assert [q for q, _, _ in order] == ["index", "enrich"] and order[1][2] <= order[1][1], order
    items, vectors = env.sql("SELECT (SELECT count(*) FROM items), (SELECT count(*) FROM vectors_text)")[0]
    assert items == vectors
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


def test_the_cli_can_queue_the_reading_for_the_workers(tmp_path, monkeypatch, capsys):
    """`embed_and_index --queue-enrichments`: the folder is indexed without OCR and one enrichment job per image
    is queued; a burst worker reads them; a second run queues nothing."""
    import os
    import subprocess
    import sys

    import psycopg

    from clip_embedder.scripts import embed_and_index
    from tests.helpers import IMAGENET_LABELS, MOBILENET, ROOT, TAGGER_HEAD, YOLO_WEIGHTS

    folder = tmp_path / "photos"
    folder.mkdir()
    render_sign(IMAGES / "000000000049.jpg", "PHARMACY", folder / "sign_en.jpg", FONTS["en"])
    (folder / "plain.jpg").write_bytes((IMAGES / "000000000009.jpg").read_bytes())
    env = {"PGDATA_DIR": tmp_path / "pg", "FAISS_DIR": tmp_path / "faiss", "DETECTOR_WEIGHTS": YOLO_WEIGHTS,
           "MOBILENET_WEIGHTS": MOBILENET, "SPACES": "mobilenet,text", "DATABASE_URL": "",
           "TAGGER_WEIGHTS": TAGGER_HEAD, "TAGGER_LABELS": IMAGENET_LABELS, "OCR": "rapidocr",
           "STORAGE_ROOT": tmp_path / "originals"}
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(tmp_path)
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--queue-enrichments"]) == 0
    assert "queued 2 enrichment job(s)" in capsys.readouterr().out
    burst = subprocess.run([sys.executable, "-m", "clip_embedder.worker", "--burst"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                           timeout=300)
    assert burst.returncode == 0, burst.stderr[-3000:]
    from clip_embedder.db.server import resolve_database_url

    with psycopg.connect(resolve_database_url(None, tmp_path / "pg")) as c:
        text = " ".join(r[0] for r in c.execute("SELECT text FROM ocr_lines"))
        states = {r[0] for r in c.execute("SELECT status::text FROM procrastinate_jobs WHERE queue_name = 'enrich'")}
    assert "PHARMACY" in text and states == {"succeeded"}
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--queue-enrichments"]) == 0
    assert "queued 0 enrichment job(s)" in capsys.readouterr().out


def test_an_enrichment_never_indexes_an_image_that_is_not_stored(store, tmp_path):
    """The enrichment jobs' plan (`only_stored`): a file whose image is not stored — deleted after its job was
    queued — is skipped, not indexed again; the same file is indexed by an ordinary plan."""
    import numpy as np
    from PIL import Image

    from clip_embedder.indexing.batch import Batch, SourceFile
    from clip_embedder.indexing.stages import plan_stage, read_stage

    path = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(7).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    for only_stored, decoded in ((True, 0), (False, 1)):
        batch = read_stage(Batch([SourceFile.from_folder(path)]), max_bytes=10**7)
        plan_stage(batch, store, spaces=["mobilenet"], detector_sha256="x", redetect=False, only_stored=only_stored)
        assert (len(batch.to_decode), batch.skipped) == (decoded, 1 - decoded)


def test_the_text_gate_reads_a_sign_and_skips_a_photo_without_text(tmp_path):
    """OCR_GATE: RapidOCR's detector alone decides whether a photo is worth recognising — a rendered sign passes
    and is read; a smooth gradient (no text at all) is skipped before recognition; the gate is in the signature."""
    import numpy as np
    from PIL import Image

    from clip_embedder.models.ocr import RapidOcrEngine

    sign = tmp_path / "sign.jpg"
    render_sign(IMAGES / "000000000049.jpg", "PHARMACY", sign, FONTS["en"])
    gated = RapidOcrEngine(0.6, gate=True)
    assert "PHARMACY" in " ".join(ln.text for ln in gated.read(Image.open(sign).convert("RGB")))
    ramp = np.tile(np.linspace(0, 255, 640, dtype=np.uint8), (480, 1))
    assert gated.read(Image.fromarray(np.stack([ramp] * 3, axis=-1))) == []
    assert (gated.gate_passed, gated.gate_skipped) == (1, 1)
    assert gated.signature != RapidOcrEngine(0.6).signature  # switching the gate re-reads the photos


def test_analysis_jobs_store_what_each_photo_holds_and_search_filters_on_it(env):
    """ANALYZE=true: after each photo is written, an analysis job on the enrich queue (after its OCR job, whose lines
    it reuses) stores the description, the verdict and the labels; GET /api/images/{id}/analysis serves them, and
    both search routes filter on them (sensitive=exclude|only, faces=true)."""
    from tests.helpers import PHOTOS

    card = env.tmp / "card.jpg"
    render_sign(IMAGES / "000000000074.jpg", "4111 1111 1111 1111", card, FONTS["en"])
    worker = env.start_worker(OCR="rapidocr", ENRICH="queue", ENRICH_CONCURRENCY="1", ANALYZE="true",
                              FACE_WEIGHTS_DIR=str(PHOTOS.parent.parent / "models" / "faces"))
    up = env.upload([PHOTOS / "grace_hopper.jpg", PHOTOS / "sunflower.jpg", card])
    done = env.wait_batch(up.json()["batch"], timeout=240)
    ids = {t["file_name"]: t["image_id"] for t in done["tasks"]}
    assert all(ids.values()), done

    def analysis(name: str) -> dict | None:
        r = env.http.get(f"/api/images/{ids[name]}/analysis")
        return r.json() if r.status_code == 200 else None
    assert wait_for(lambda: all(analysis(n) for n in ids), 300), (env.tmp / "worker1.log").read_text()[-3000:]
    batch = up.json()["batch"]
    assert wait_for(lambda: all(t["enrichments"] == {"ocr": "done", "analysis": "done"} for t in env.http.get(
        "/api/tasks", params={"batch": batch}).json()["tasks"]), 30)  # where each image's follow-up work stands
    assert env.http.get(f"/api/images/{ids['card.jpg']}").json()["enrichments"]["analysis"] == "done"
    grace, sun, card_a = analysis("grace_hopper.jpg"), analysis("sunflower.jpg"), analysis("card.jpg")
    assert grace["sensitive"]["verdict"] is True and grace["sensitive"]["reasons"][0]["category"] == "face"
    assert sun["sensitive"]["verdict"] is False and sun["description"].startswith("A photo of a daisy")
    assert any(r["category"] == "personal_data" for r in card_a["sensitive"]["reasons"])
    for a in (grace, sun, card_a):  # the OCR job ran first: its lines were reused, not read again
        assert "ocr" not in a["timings_ms"] and a["provider"] == "local", a["timings_ms"]
    assert "4111" in " ".join(t["text"] for t in card_a["text"])
    r = env.http.get(f"/api/images/{ids['sunflower.jpg']}/analysis")
    assert r.headers["X-Analysis-Signature"].startswith("local:") and r.headers["Last-Modified"]
    assert env.http.get("/api/images/999999/analysis").status_code == 404

    def found(**params) -> tuple[set[int], list[str]]:
        body = env.http.get("/api/search_text", params={"query": "photo", "include_weak": True, "top_k": 50,
                                                        **params}).json()
        return {h["image_id"] for h in body["results"]}, body["warnings"]
    everything, _ = found()
    assert set(ids.values()) <= everything
    only, _ = found(sensitive="only")
    assert only == {ids["grace_hopper.jpg"], ids["card.jpg"]}
    clean, warnings = found(sensitive="exclude")
    assert clean == {ids["sunflower.jpg"]}
    if everything - set(ids.values()):  # the first test's photos, indexed before ANALYZE: left out, and said so
        assert any("not analysed yet" in w for w in warnings), warnings
    assert found(faces=True)[0] == {ids["grace_hopper.jpg"]}
    posted = env.http.post("/api/search_text", json={"query": "photo", "include_weak": True, "top_k": 50,
                                                     "sensitive": "only"}).json()
    assert {h["image_id"] for h in posted["results"]} == only
    by_image = env.http.post("/api/search_image", params={"top_k": 5, "sensitive": "exclude"}, files={
        "file": ("q.jpg", (PHOTOS / "grace_hopper.jpg").read_bytes(), "image/jpeg")}).json()
    neighbours = by_image["image_neighbours"] + [h for o in by_image["objects"] for h in o["neighbours"]]
    assert neighbours and {h["image_id"] for h in neighbours} <= {ids["sunflower.jpg"]}, neighbours
    assert env.http.get("/api/search_text", params={"query": "photo", "sensitive": "maybe"}).status_code == 422
    metrics = env.http.get("/metrics").text
    assert 'clip_embedder_analysed_images{kind="sensitive"} 2.0' in metrics
    assert 'clip_embedder_analysed_images{kind="with_faces"} 1.0' in metrics
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0


def test_a_hosted_providers_description_becomes_a_searchable_caption(env):
    """ANALYSIS_PROVIDER=openai (a stand-in on 127.0.0.1) with ANALYZE=true: the worker's analysis job stores the
    provider's answer, and its description becomes the photo's caption — found by its words and in the text space;
    health says where the text space's captions came from."""
    import json

    from tests.helpers import PHOTOS
    from tests.unit.test_analysis_providers import FakeOpenAi, completion

    fake = FakeOpenAi()
    fake.then(200, completion('{"description": "A snowy owl perched on a mossy branch."}'))
    fake.then(200, completion(json.dumps({"verdict": "NO", "reasons": []})))
    owl_box = {"label": "owl", "score": 0.9, "bbox_xyxy": [100, 20, 400, 370]}
    fake.then(200, completion(json.dumps({"labels": [owl_box]})))
    try:
        worker = env.start_worker(ANALYZE="true", ANALYSIS_PROVIDER="openai", ANALYSIS_BASE_URL=fake.url,
                                  ANALYSIS_MODEL="llava", ANALYSIS_API_KEY="sk-stand-in")
        done = env.wait_batch(env.upload([PHOTOS / "owl.jpg"]).json()["batch"], timeout=240)
        owl = done["tasks"][0]["image_id"]
        assert wait_for(lambda: env.http.get(f"/api/images/{owl}/analysis").status_code == 200, 240), \
            (env.tmp / f"worker{len(env.workers) - 1}.log").read_text()[-3000:]
        a = env.http.get(f"/api/images/{owl}/analysis").json()
        assert a["provider"] == "openai" and a["model"] == "llava" and a["usage"]["calls"] == 3
        assert a["labels"] == [{**owl_box, "source": "provider"}]
        assert len(fake.requests) == 3 and fake.requests[0][2]["authorization"] == "Bearer sk-stand-in"

        def first(query: str, **params):
            hits = env.http.get("/api/search_text", params={"query": query, "top_k": 3, **params}).json()["results"]
            return hits[0] if hits else {}
        assert wait_for(lambda: first("mossy").get("image_id") == owl, 30)  # the caption's words, lexically
        dense = first("a snowy owl perched on a mossy branch", spaces="text")
        assert dense["image_id"] == owl and "text" in dense["spaces"], dense  # and its vector in the text space
        assert env.http.get("/api/health").json()["spaces"]["text"]["captions"] == {"openai:llava": 1}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        fake.server.shutdown()
