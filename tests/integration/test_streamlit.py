"""The Streamlit page through Streamlit's AppTest, against the real API served by uvicorn."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.helpers import ROOT, free_port, subset_files

APP = str(ROOT / "streamlit_app.py")


def run_app(monkeypatch, api_url: str) -> AppTest:
    monkeypatch.setenv("API_URL", api_url)
    at = AppTest.from_file(APP, default_timeout=120)
    return at.run()


def test_api_down_gives_a_clear_message(monkeypatch):
    at = run_app(monkeypatch, f"http://127.0.0.1:{free_port()}")
    assert at.error and "not reachable" in at.error[0].value and "uvicorn api.main:app" in at.error[0].value


def test_text_mode(monkeypatch, live_api):
    at = run_app(monkeypatch, live_api)
    assert not at.error
    at.sidebar.radio[0].set_value("text").run()
    at.text_input[0].input("handbag").run()
    assert not at.error
    assert any("** for “handbag”" in m.value for m in at.markdown)
    assert len(at.get("image")) >= 1
    # the page says what it hid, and a button shows it (the API's own answer for the same query)
    import httpx

    api = httpx.get(f"{live_api}/api/search_text", params={"query": "handbag", "top_k": 10}).json()
    line = next(m.value for m in at.markdown if "** for “handbag”" in m.value)
    if api["hidden_weak"]:
        assert f"({api['hidden_weak']} weaker" in line and at.button, line
        at.button[0].click().run()
        assert at.sidebar.checkbox(key="include_weak").value and "weaker" not in next(
            m.value for m in at.markdown if "** for “handbag”" in m.value)
    else:
        assert "weaker" not in line and not at.button
    # top_k applies to searches only; uploads are sized by the service's limit
    at.sidebar.radio[0].set_value("add photos").run()
    assert not at.sidebar.slider
    health = httpx.get(f"{live_api}/api/health").json()
    assert health["limits"]["max_upload_bytes"] > 0 and health["limits"]["max_files_per_upload"] > 0


def test_links_open_a_text_query_and_a_similar_image_search(monkeypatch, live_api):
    monkeypatch.setenv("API_URL", live_api)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["mode"] = "text"
    at.query_params["q"] = "car"
    at.run()
    assert not at.error and any("** for “car”" in m.value for m in at.markdown)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["mode"] = "image"
    at.query_params["image_id"] = "1"
    at.run()
    assert not at.error and any(s.value == "Similar whole images" for s in at.subheader)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["image_id"] = "999999"
    at.run()
    assert at.error and "not available" in at.error[0].value


def test_image_mode_upload(monkeypatch, live_api, subset):
    path: Path = subset_files(subset)[5][0]
    at = run_app(monkeypatch, live_api)
    at.file_uploader[0].set_value((path.name, path.read_bytes(), "image/jpeg")).run()
    assert not at.error
    assert any(s.value == "Similar whole images" for s in at.subheader)
    assert len(at.get("image")) >= 2  # the query with its boxes, and results
    assert any("objects searched" in m.value for m in at.markdown)
    # a bad upload is reported, not a crash
    at.file_uploader[0].set_value(("x.jpg", path.read_bytes()[:2000], "image/jpeg")).run()
    assert at.error and "refused" in at.error[0].value


def test_add_photos_mode_follows_a_batch(monkeypatch, live_api, subset):
    """An upload of an already indexed photo and a new one (no worker runs here: it stays queued):
    the page shows the progress, the searchable photo with its link, and that the rest is still indexing."""
    import httpx

    from tests.helpers import SHARED

    indexed = subset_files(subset)[3][0]
    new = SHARED / "datasets" / "photos" / "sunflower.jpg"
    r = httpx.post(f"{live_api}/api/images", headers={"X-API-Key": "test-key"},
                   files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in (indexed, new)])
    assert r.status_code == 202, r.text
    batch = r.json()["batch"]
    monkeypatch.setenv("API_URL", live_api)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["mode"] = "add"
    at.query_params["batch"] = batch
    at.run()
    assert not at.error
    assert any("1 photos searchable" in h.value for h in at.subheader)
    assert any("search like this" in c.value for c in at.caption)
    assert any("1 still queued" in i.value for i in at.info)
    assert any("No indexing worker is running" in w.value for w in at.warning)


def test_add_photos_without_a_key_says_so(monkeypatch, live_api):
    monkeypatch.setenv("API_URL", live_api)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["mode"] = "add"
    at.run()
    assert not at.error and any("Choose photos" in i.value for i in at.info)


def test_no_match_is_said_on_the_page(monkeypatch, live_api):
    """A query nothing in the index matches confidently: the page says so instead of showing ten guesses;
    the detector's classes are listed."""
    at = run_app(monkeypatch, live_api)
    at.sidebar.radio[0].set_value("text").run()
    at.text_input[0].input("spaceship").run()
    assert not at.error
    assert any("nothing in this index looks like 'spaceship'" in w.value for w in at.warning)
    assert any("**0 images**" in m.value for m in at.markdown) and not at.get("image")
    assert any("detector knows 80 object classes" in e.label for e in at.expander)


def test_analyse_mode_draws_boxes_and_gives_the_verdict(monkeypatch, live_api):
    """An indexed photo opened in the "analyse" mode (as its results' "analyse" link does): the photo with its boxes,
    the verdict, the description, and the JSON to download."""
    import httpx

    hits = httpx.get(f"{live_api}/api/search_text", params={"query": "person", "include_weak": True}).json()
    image_id = hits["results"][0]["image_id"]
    monkeypatch.setenv("API_URL", live_api)
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["mode"] = "analyse"
    at.query_params["image_id"] = str(image_id)
    at.run()
    refusals = [e.value for e in at.error if not e.value.startswith("**Sensitive**")]  # the verdict is an st.error
    assert not refusals and not at.exception, refusals
    assert at.sidebar.radio[0].value == "analyse"
    assert len(at.get("image")) == 1 and at.get("download_button")
    assert any("Sensitive" in m.value for m in at.error) or any("Not sensitive" in m.value for m in at.success)
    assert any(m.value.startswith("**") and m.value.endswith(".**") for m in at.markdown)  # the description


def test_content_filter_in_the_sidebar_reaches_the_api(monkeypatch, live_api):
    """"hide sensitive photos" sends sensitive=exclude: on an index nobody analysed, the answer is empty and says
    why (photos not analysed pass no filter)."""
    at = run_app(monkeypatch, live_api)
    at.sidebar.radio[0].set_value("text").run()
    at.text_input[0].input("person").run()
    assert len(at.get("image")) >= 1
    at.sidebar.selectbox(key="content").set_value("hide sensitive photos").run()
    assert not at.error and len(at.get("image")) == 0
    assert any("not analysed yet" in w.value for w in at.warning), [w.value for w in at.warning]


def test_ledger_mode_shows_a_receipt_and_saves_a_correction(monkeypatch, live_api, settings, store):
    """A receipt read from a shared photo (OCR + rules) and written to the ledger: the "ledger" mode shows the
    monthly chart, the CSV button and the receipt beside its fields; a correction typed in the form reaches the API
    and the audit keeps the extractor's value."""
    import httpx

    from clip_embedder.images import read_image_file, sha256_bytes
    from clip_embedder.intake.originals import open_originals
    from clip_embedder.models.ocr import RapidOcrEngine
    from clip_embedder.receipts.ledger import file_receipt
    from clip_embedder.receipts.rules import RulesExtractor
    from tests.helpers import SHARED

    path = SHARED / "datasets" / "receipts_sroie" / "img" / "015.jpg"
    image, sha = read_image_file(path, max_bytes=10**8, max_pixels=10**8)
    open_originals(settings.storage_root).put(f"{sha}.jpg", path.read_bytes())
    receipt = RulesExtractor().extract(RapidOcrEngine(0.6).read(image))
    rid, _ = file_receipt(store, receipt, sha256=sha256_bytes(path.read_bytes()), original=f"{sha}.jpg",
                          file_name=path.name, size=image.size, extractor_version="1")
    monkeypatch.setenv("API_URL", live_api)
    monkeypatch.setenv("API_KEY", "test-key")
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["mode"] = "ledger"
    at.query_params["receipt"] = str(rid)
    at.run()
    assert not at.error and not at.exception, [e.value for e in at.error]
    assert at.get("download_button") and at.get("vega_lite_chart")  # the CSV, the monthly chart
    assert any(f"Receipt #{rid}" in s.value for s in at.subheader) and len(at.get("image")) == 1
    total = next(t for t in at.text_input if t.label == "total")
    assert total.value == "15.90"  # 015's key file: 15.90
    total.set_value("16.90")
    next(b for b in at.button if b.label == "Save corrections").click().run()
    assert not at.error, [e.value for e in at.error]
    got = httpx.get(f"{live_api}/api/receipts/{rid}").json()
    assert got["fields"]["total"] == 16.9 and got["corrections"][0]["extracted"] == 15.9
