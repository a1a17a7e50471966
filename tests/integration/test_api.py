"""The FastAPI service over the real index: search round trips and every bad input as a 4xx."""
from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from tests.helpers import gt_classes, subset_files, wait_for


def jpeg(path) -> bytes:
    return path.read_bytes()


def test_health(client):
    h = client.get("/api/health").json()
    assert h["status"] == "ok" and h["counts"]["images"] == 74
    assert set(h["spaces"]) == {"mobilenet", "text", "clip"}
    assert h["spaces"]["mobilenet"]["dim"] == 1024 and h["spaces"]["text"]["text_queries"]
    assert h["detector"]["classes"] == 80 and "person" in h["labels"]


def test_start_up_objects_are_frozen_out_of_the_collector(client):
    """The lifespan freezes what start-up loaded (models, torch, the app), so full collections under load walk
    only the objects requests make (each walked ~430,000 objects for ~150 ms at 1M items before)."""
    import gc

    assert client.get("/api/health").status_code == 200
    assert gc.get_freeze_count() > 50_000, gc.get_freeze_count()


def test_database_probe_pings_without_the_gil_and_tells_up_from_down(store, tmp_path):
    """Health's probe calls libpq's PQping through ctypes (the GIL released for the connection attempt, not held
    as by psycopg's compiled ping) and raises OSError when nothing accepts connections."""
    import asyncio
    import ctypes

    from api.health import DatabaseProbe

    probe = DatabaseProbe(store.url, max_age=0.2)
    assert isinstance(probe._ping_fn, ctypes._CFuncPtr)  # the GIL-releasing path, not the fallback
    asyncio.run(probe.check(5.0))
    first = probe._checked_at
    asyncio.run(probe.check(5.0))  # fresh: no new ping
    assert probe._checked_at == first and probe._started_at is None
    time.sleep(0.25)
    asyncio.run(probe.check(5.0))  # stale: answered from the latest ping at once, a new one in the background
    assert wait_for(lambda: probe._checked_at != first, 5)

    down = DatabaseProbe(f"postgresql://postgres@/postgres?host={tmp_path}", max_age=0.2)
    with pytest.raises(OSError, match="NO_RESPONSE"):
        asyncio.run(down.check(5.0))
    down._ping_fn = lambda conninfo: time.sleep(3) or 0  # a ping that hangs: reported once it passes the timeout
    time.sleep(0.25)
    with pytest.raises(OSError, match="NO_RESPONSE"):  # the latest result, at once, while the new ping runs
        asyncio.run(down.check(1.0))
    time.sleep(1.1)
    with pytest.raises(TimeoutError, match="no answer"):
        asyncio.run(down.check(1.0))


def test_search_image_self_first_and_payload(client, subset):
    path = subset_files(subset)[10][0]
    r = client.post("/api/search_image", params={"top_k": 4},
                    files={"file": (path.name, jpeg(path), "image/jpeg")})
    assert r.status_code == 200, r.text
    j = r.json()
    first = j["image_neighbours"][0]
    info = client.get(f"/api/images/{first['image_id']}").json()
    assert info["sha256"] and client.get(first["image_url"]).content == path.read_bytes()
    assert len(j["image_neighbours"]) == 4 and first["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert (first["image_width"], first["image_height"]) == Image.open(path).size
    for o in j["objects"]:
        assert len(o["bbox"]) == 4 and (o["skipped"] or len(o["neighbours"]) <= 4)
    crop = client.get(j["objects"][0]["neighbours"][0]["crop_url"]) if j["objects"] else None
    if crop is not None:
        assert crop.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(crop.content)).size[0] > 0
    thumb = client.get(first["thumbnail_url"], params={"size": 64})
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64


def test_image_search_skips_what_does_not_matter_and_lists_each_image_once(client):
    """grace_hopper.jpg: the 29x25 px "person" on her medal is reported as skipped (under QUERY_MIN_OBJECT_FRACTION of
    the photo), the tie and the person are searched, and no neighbour list holds an image twice."""
    from tests.helpers import PHOTOS

    r = client.post("/api/search_image", params={"top_k": 8},
                    files={"file": ("grace_hopper.jpg", (PHOTOS / "grace_hopper.jpg").read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    objects = r.json()["objects"]
    small = [o for o in objects if min(o["bbox"][2] - o["bbox"][0], o["bbox"][3] - o["bbox"][1]) < 40]
    assert small and all("QUERY_MIN_OBJECT_FRACTION" in (o["skipped"] or "") and not o["neighbours"] for o in small)
    searched = [o for o in objects if not o["skipped"]]
    assert {o["label"] for o in searched} >= {"tie", "person"}
    for o in searched:
        ids = [h["image_id"] for h in o["neighbours"]]
        assert ids and len(ids) == len(set(ids)), o["label"]


def test_docs_and_redoc_need_no_network(client):
    """/docs and /redoc load Swagger UI and ReDoc from the API itself (fastapi-offline's files), not from a CDN."""
    import re

    for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        html = client.get(page)
        assert html.status_code == 200 and asset in html.text
        assert not re.search(r"(src|href)=[\"']https?://", html.text), "a CDN reference"
        url = re.search(rf"(?:src|href)=[\"']([^\"']*{re.escape(asset)})", html.text).group(1)
        js = client.get(url)
        assert js.status_code == 200 and len(js.content) > 100_000, url
    assert client.get("/openapi.json").json()["info"]["title"] == "Object-level visual search"


def test_search_text_handbag(client, subset):
    r = client.get("/api/search_text", params={"query": "handbag", "top_k": 10})
    assert r.status_code == 200
    gt = gt_classes(subset)
    names = [client.get(h["image_url"]).request.url.path for h in r.json()["results"]]
    files = [client.get(f"/api/images/{h['image_id']}").json() for h in r.json()["results"]]
    # confident hits only: every result matched "handbag" as a label or tag, or reached the text space's floor
    assert 1 <= len(names) <= 10 and not any(h["weak"] for h in r.json()["results"])
    assert all(h["label"] == "handbag" or h["similarity"] >= 0.52 or "lexical" in h["spaces"]
               for h in r.json()["results"])
    weak = client.get("/api/search_text", params={"query": "handbag", "top_k": 10, "include_weak": True}).json()
    assert len(weak["results"]) == 10 and weak["results"][:len(names)] == r.json()["results"]
    hits = [f for f in files if any("handbag" in gt[p.name] for p, _ in subset_files(subset)
                                    if f["sha256"] == __import__("hashlib").sha256(p.read_bytes()).hexdigest())]
    assert hits
    post = client.post("/api/search_text", json={"query": "handbag", "top_k": 10})
    assert [h["image_id"] for h in post.json()["results"]] == [h["image_id"] for h in r.json()["results"]]


@pytest.mark.parametrize("case,status,message", [
    ("not an image", 415, "not an image format"),
    ("wrong content type", 415, "is not an image"),
    ("truncated", 422, "truncated"),
    ("empty", 422, "empty"),
    ("over the size cap", 413, "MAX_UPLOAD_BYTES"),
    ("just over the size cap", 413, "MAX_UPLOAD_BYTES"),
    ("over the pixel cap", 413, "MAX_IMAGE_PIXELS"),
])
def test_bad_uploads(client, subset, case, status, message):
    good = jpeg(subset_files(subset)[0][0])
    ctype = "image/jpeg"
    if case == "not an image":
        data = b"%PDF-1.4 definitely not a picture"
    elif case == "wrong content type":
        data, ctype = good, "text/plain"
    elif case == "truncated":
        data = good[: len(good) // 3]
    elif case == "empty":
        data = b""
    elif case == "over the size cap":  # refused from Content-Length, before the body is read
        data = good + b"\0" * (10 * 1024 * 1024)
    elif case == "just over the size cap":  # inside the multipart allowance: refused when read
        data = good + b"\0" * (10 * 1024 * 1024 + 1 - len(good))
    else:
        buf = io.BytesIO()
        Image.new("L", (8000, 6000)).save(buf, "PNG")  # 48 Mpx, a few KB compressed
        data, ctype = buf.getvalue(), "image/png"
    r = client.post("/api/search_image", files={"file": ("q", data, ctype)})
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


@pytest.mark.parametrize("method,url,params,status", [
    ("get", "/api/search_text", {"query": ""}, 422),
    ("get", "/api/search_text", {"query": "   "}, 422),
    ("get", "/api/search_text", {"query": "car", "top_k": 0}, 422),
    ("get", "/api/search_text", {"query": "car", "spaces": "mobilenet"}, 422),
    ("get", "/api/search_text", {"query": "car", "spaces": "nope"}, 422),
    ("get", "/api/images/987654", {}, 404),
    ("get", "/api/images/987654/thumbnail", {}, 404),
    ("get", "/api/items/987654/crop", {}, 404),
    ("get", "/api/images/abc", {}, 422),
])
def test_bad_queries(client, method, url, params, status):
    r = getattr(client, method)(url, params=params)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_missing_file_is_404_not_500(client, store, tmp_path):
    from clip_embedder.db.records import ImageRow, ItemRow

    ids = store.batches.write([ImageRow("b" * 64, str(tmp_path / "gone.jpg"), 10, 10, None, "x", None,
                                      [ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x")])])
    try:
        r = client.get(f"/api/images/{ids[0]}/file")
        assert r.status_code == 404 and "re-index" in r.json()["detail"]
    finally:
        with store.conn() as c:
            c.execute("DELETE FROM images WHERE id=%s", (ids[0],))


def test_running_api_follows_writes_and_deletes(client, store, subset):
    """A write by another process (here: the store directly, as the CLI or a worker does) reaches the
    running API's FAISS indexes through NOTIFY, without a reload; so does a delete."""
    import numpy as np

    from clip_embedder.db.records import ImageRow, ItemRow

    h = client.get("/api/health").json()
    before = {s: v["vectors"] for s, v in h["spaces"].items()}
    vec = {s: np.eye(v["dim"], dtype=np.float32)[0] for s, v in h["spaces"].items()}
    ids = store.batches.write([ImageRow("c" * 64, str(subset_files(subset)[0][0]), 10, 10, None, "x", None,
                                      [ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x", vec)])])

    def vectors():
        return {s: v["vectors"] for s, v in client.get("/api/health").json()["spaces"].items()}

    try:
        assert wait_for(lambda: vectors() == {s: n + 1 for s, n in before.items()}), vectors()
        item = store.images.get(ids[0]).image_item_id
        D, found = client.app.state.service.indexes["text"].search(vec["text"][None], 1)
        assert found[0][0] == item and D[0][0] > 0.999
    finally:
        store.images.delete(ids[0])
    assert wait_for(lambda: vectors() == before), vectors()
    assert not any(v["stale"] for v in client.get("/api/health").json()["spaces"].values())


def test_reload_needs_a_key(client):
    assert client.post("/api/reload").status_code == 401
    assert client.post("/api/reload", headers={"X-API-Key": "wrong"}).status_code == 403
    r = client.post("/api/reload", headers={"X-API-Key": "test-key"})
    assert r.status_code == 200 and set(r.json()) == {"mobilenet", "text", "clip"}


def test_openapi_docs(client):
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search_image", "/api/search_text", "/api/health", "/api/images/{image_id}"} <= set(paths)


def test_concurrent_requests_agree_with_sequential_ones(client, subset):
    """Models, FAISS and the pool are shared across the server's worker threads."""
    from concurrent.futures import ThreadPoolExecutor

    paths = [p for p, _ in subset_files(subset)[:4]]

    def image(p):
        r = client.post("/api/search_image", params={"top_k": 5},
                        files={"file": (p.name, p.read_bytes(), "image/jpeg")})
        return [h["item_id"] for h in r.json()["image_neighbours"]]

    def text(q):
        return [h["item_id"] for h in client.get("/api/search_text", params={"query": q}).json()["results"]]

    expected = [image(p) for p in paths] + [text(q) for q in ("car", "book")]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda job: job[0](job[1]), [(image, p) for p in paths] + [(text, "car"), (text, "book")]))
    assert got == expected


def test_work_per_request_is_bounded(client):
    """A list parameter cannot multiply the work: the same space twice is searched once, more than eight
    are refused at once, and `spaces=` (empty) means all spaces."""
    import time

    t = time.perf_counter()
    r = client.post("/api/search_text", json={"query": "car", "spaces": ["text"] * 10_000})
    assert r.status_code == 422 and isinstance(r.json()["detail"], str) and time.perf_counter() - t < 2
    r = client.get("/api/search_text", params=[("query", "car")] + [("spaces", "text")] * 3000)
    assert r.status_code == 422 and time.perf_counter() - t < 4
    twice = client.post("/api/search_text", json={"query": "car", "spaces": ["text", "text", " text "]})
    assert twice.status_code == 200 and twice.json()["spaces"] == ["text"]
    empty = client.get("/api/search_text", params={"query": "car", "spaces": ""})
    assert empty.status_code == 200 and set(empty.json()["spaces"]) == {"text", "clip"}
    assert client.get("/api/search_text", params={"query": "x" * 1001}).status_code == 422




def test_files_are_served_only_as_they_were_indexed(client, store, subset):
    """A replaced file (410), a symlink put where an indexed file was (404), never an absolute server path
    in the message; the original is served again once it is back."""
    import os

    hit = client.get("/api/search_text", params={"query": "car", "top_k": 1}).json()["results"][0]
    image_id, item_id = hit["image_id"], hit["item_id"]
    path = __import__("pathlib").Path(store.images.get(image_id).image.path)
    original = path.read_bytes()
    # the subset's images are hard links into ../shared: give this one its own inode before touching it
    path.unlink()
    path.write_bytes(original)
    assert path.stat().st_nlink == 1
    urls = [f"/api/images/{image_id}/file", f"/api/images/{image_id}/thumbnail", f"/api/items/{item_id}/crop"]
    try:
        other = next(p for p, _ in subset_files(subset) if p.read_bytes() != original)
        path.write_bytes(other.read_bytes())  # another real image under the same name
        for url in urls:
            r = client.get(url)
            assert r.status_code == 410 and "changed since it was indexed" in r.json()["detail"], url
            assert str(path.parent) not in r.json()["detail"]
        path.unlink()
        os.symlink("/etc/hostname", path)
        for url in urls:
            r = client.get(url)
            assert r.status_code == 404 and str(path.parent) not in r.json()["detail"], url
    finally:
        path.unlink(missing_ok=True)
        path.write_bytes(original)
    r = client.get(urls[0])
    assert r.status_code == 200 and r.content == original and r.headers["content-type"] == "image/jpeg"


def test_bodies_are_capped_while_they_stream(live_api, settings):
    """A chunked body (no Content-Length) is answered 413 as soon as it passes its cap: the server does not
    wait for (or spool) the rest, which this client never sends."""
    import socket

    import httpx

    host, port = live_api.removeprefix("http://").split(":")

    def chunked_then_wait(path: str, ctype: str, nbytes: int) -> bytes:
        with socket.create_connection((host, int(port)), timeout=30) as sk:
            sk.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                       "Transfer-Encoding: chunked\r\n\r\n".encode())
            head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n' \
                if "multipart" in ctype else b'{"query": "'
            sk.sendall(b"%x\r\n%s\r\n" % (len(head), head))
            chunk = b"\xff" * (1 << 20)
            for _ in range(nbytes >> 20):
                sk.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            # the body is not finished (no last chunk): only a server that stops at the cap answers now
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                got = sk.recv(65536)
                if not got:
                    break
                answer += got
            return answer

    answer = chunked_then_wait("/api/search_image", "multipart/form-data; boundary=xyz",
                               settings.max_upload_bytes + (2 << 20))
    assert answer.startswith(b"HTTP/1.1 413") and b"MAX_UPLOAD_BYTES" in answer, answer[:300]
    answer = chunked_then_wait("/api/search_text", "application/json", 2 << 20)
    assert answer.startswith(b"HTTP/1.1 413") and b"JSON" in answer, answer[:300]
    big = httpx.post(f"{live_api}/api/search_text", timeout=60, headers={"content-type": "application/json"},
                     content=b'{"query": "car", "label": "' + b"x" * (5 << 20) + b'"}')
    assert big.status_code == 413 and "JSON" in big.json()["detail"]


def test_heavy_requests_beyond_the_limit_get_503_and_health_still_answers(client, subset):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    app = client.app
    old_limits, old_wait = app.state.limits, app.state.settings.busy_wait_seconds
    app.state.limits = {**old_limits, "image": asyncio.Semaphore(1)}
    app.state.settings.busy_wait_seconds = 0.0
    data = subset_files(subset)[5][0].read_bytes()
    try:
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(client.post, "/api/search_image", files={"file": ("q.jpg", data, "image/jpeg")})
                       for _ in range(6)]
            health = client.get("/api/health")
            answers = [f.result() for f in futures]
    finally:
        app.state.limits, app.state.settings.busy_wait_seconds = old_limits, old_wait
    codes = sorted(r.status_code for r in answers)
    assert 200 in codes and 503 in codes, codes
    busy = next(r for r in answers if r.status_code == 503)
    assert busy.headers["Retry-After"] and "MAX_CONCURRENT_IMAGE_REQUESTS" in busy.json()["detail"]
    assert health.status_code == 200


def test_text_search_slots_and_read_keys(client, settings):
    """The text route takes its slot itself (no dependency): with none free it answers 503 naming the setting; with
    REQUIRE_KEY_FOR_READS it needs a key like every read."""
    import asyncio

    from fastapi.testclient import TestClient

    from api.main import create_app

    app = client.app
    old_limits, old_wait = app.state.limits, app.state.settings.busy_wait_seconds
    app.state.limits = {**old_limits, "text": asyncio.Semaphore(0)}
    app.state.settings.busy_wait_seconds = 0.0
    try:
        busy = [client.get("/api/search_text", params={"query": "car"}),
                client.post("/api/search_text", json={"query": "car"})]
    finally:
        app.state.limits, app.state.settings.busy_wait_seconds = old_limits, old_wait
    for r in busy:
        assert r.status_code == 503 and "MAX_CONCURRENT_TEXT_SEARCHES" in r.json()["detail"], r.text
        assert r.headers["Retry-After"]
    ok = client.get("/api/search_text", params={"query": "car", "top_k": 2})
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/json"
    assert set(ok.json()) == {"query", "results", "spaces", "warnings", "hidden_weak", "took_ms"}

    with TestClient(create_app(settings.model_copy(update={"require_key_for_reads": True}))) as locked:
        assert locked.get("/api/search_text", params={"query": "car"}).status_code == 401
        assert locked.post("/api/search_text", json={"query": "car"}).status_code == 401
        assert locked.get("/api/search_text", params={"query": "car"}, headers={"X-API-Key": "wrong"}).status_code \
            == 403
        keyed = locked.post("/api/search_text", json={"query": "car", "top_k": 2}, headers={"X-API-Key": "test-key"})
        assert keyed.status_code == 200 and keyed.json()["results"] == client.post(
            "/api/search_text", json={"query": "car", "top_k": 2}).json()["results"]
        assert locked.get("/api/health").status_code == 200


def test_label_filters_are_cached_with_a_bound(service):
    import numpy as np

    from clip_embedder.indexing.faiss_index import SELECTOR_CACHE

    for ix in service.indexes.values():
        q = np.ones((1, ix.identity.dim), np.float32)
        for n in range(SELECTOR_CACHE * 3):
            ix.search(q, 1, labels=(f"no-such-label-{n}",))
        assert len(ix._selectors) <= SELECTOR_CACHE
    # a label the index has never seen is named in a warning, not answered with a silent empty list
    r = service.search_text("car", top_k=1, label="zebra")
    assert r.hits == [] and "no object in this index is labelled 'zebra'" in r.warnings[-1]
    assert "person" in r.warnings[-1]


def test_documented_shapes_hold_for_odd_requests(client):
    """OPTIONS names every method of a path; malformed JSON and multipart bodies get {"detail": str}
    with a documented status."""
    r = client.options("/api/search_text")
    assert r.status_code == 204 and set(r.headers["allow"].split(", ")) == {"GET", "POST", "OPTIONS"}
    assert set(client.options("/api/images/1").headers["allow"].split(", ")) == {"GET", "DELETE", "OPTIONS"}
    bad = client.post("/api/search_text", content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 422 and bad.json()["detail"].startswith("the request body is not valid JSON")
    broken = client.post("/api/search_image", content=b"--x\r\nbroken",
                         headers={"content-type": "multipart/form-data; boundary=x"})
    documented = client.get("/openapi.json").json()["paths"]["/api/search_image"]["post"]["responses"]
    assert str(broken.status_code) in documented and isinstance(broken.json()["detail"], str)


