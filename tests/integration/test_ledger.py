"""The household ledger end to end on real parts: receipt photos from ../shared uploaded to the API under uvicorn,
read by a real `python -m clip_embedder.worker` process (RapidOCR + the rules extractor), then looked up, corrected,
summed, exported and deleted; the CLI writing a folder into the same ledger."""
from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

from tests.helpers import SHARED
from tests.integration.test_ingest import KEY, serve

RECEIPTS = SHARED / "datasets" / "receipts_sroie"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    yield from serve(tmp_path_factory.mktemp("ledger"))


def _upload(env, files: list[tuple[str, bytes]], headers=KEY):
    return env.http.post("/api/receipts", headers=headers, files=[("files", (n, b, "image/jpeg")) for n, b in files])


def test_receipt_photo_to_ledger_correction_csv_delete(env):
    env.start_worker(RECEIPT_EXTRACTOR="rules", ENRICH_CONCURRENCY="1")
    photo = (RECEIPTS / "img" / "000.jpg").read_bytes()
    assert _upload(env, [("000.jpg", photo)], headers={}).status_code == 401
    r = _upload(env, [("000.jpg", photo)])
    assert r.status_code == 202, r.text
    task = env.wait_batch(r.json()["batch"])["tasks"][0]
    assert task["status"] == "succeeded" and task["kind"] == "receipt" and task["image_id"] is None, task
    rid = task["receipt_id"]

    # the ledger holds it with the key file's date and total (ground truth: 25/12/2018, 9.00)
    ledger = env.http.get("/api/ledger").json()
    [row] = [x for x in ledger["receipts"] if x["id"] == rid]
    assert (row["date"], row["total"], row["currency"]) == ("2018-12-25", 9.0, "MYR")
    assert row["category"] == "stationery"  # "BOOK TA .K": the default rules' BOOK
    detail = env.http.get(f"/api/receipts/{rid}").json()
    total_lines = [ln for ln in detail["fields"]["lines"] if ln["field"] == "total"]
    assert total_lines and all(0 <= ln["bbox_xyxy"][2] <= detail["width"] for ln in total_lines)
    assert env.http.get(detail["image_url"]).content == photo

    # the same photo again is the same receipt, at once; the same purchase photographed again (other bytes) is a
    # second receipt flagged as its possible duplicate
    again = _upload(env, [("000.jpg", photo)]).json()["tasks"][0]
    assert again["status"] == "succeeded" and again["receipt_id"] == rid
    buf = io.BytesIO()
    Image.open(io.BytesIO(photo)).save(buf, "JPEG", quality=90)
    dup_task = env.wait_batch(_upload(env, [("000-again.jpg", buf.getvalue())]).json()["batch"])["tasks"][0]
    dup = env.http.get(f"/api/receipts/{dup_task['receipt_id']}").json()
    assert dup["duplicate_of"] == rid and dup["needs_review"]
    assert any("same purchase" in reason for reason in dup["review_reasons"])

    # a correction changes the ledger and keeps the extractor's value in the audit
    assert env.http.patch(f"/api/receipts/{rid}", json={"total": 12.5}).status_code == 401
    assert env.http.patch(f"/api/receipts/{rid}", json={"totl": 1}, headers=KEY).status_code == 422
    assert env.http.patch(f"/api/receipts/{rid}", json={"date": "25/12/2018"}, headers=KEY).status_code == 422
    fixed = env.http.patch(f"/api/receipts/{rid}", json={"total": 12.5, "category": "gifts"}, headers=KEY)
    assert fixed.status_code == 200, fixed.text
    fixed = fixed.json()
    assert fixed["fields"]["total"] == 12.5 and fixed["extracted"]["total"] == 9.0
    assert fixed["category"] == "gifts" and fixed["category_source"] == "user"
    audit = {c["field"]: c for c in fixed["corrections"]}
    assert (audit["total"]["extracted"], audit["total"]["before"], audit["total"]["after"]) == (9.0, 9.0, 12.5)
    month = env.http.get("/api/ledger", params={"group_by": "month", "from": "2018-12-01", "to": "2018-12-31"}).json()
    assert month["groups"] == [{"key": "2018-12", "currency": "MYR", "receipts": 2, "total": 21.5}]
    by_cat = env.http.get("/api/ledger", params={"group_by": "category"}).json()["groups"]
    assert {g["key"]: g["total"] for g in by_cat} == {"gifts": 12.5, "stationery": 9.0}
    assert env.http.get("/api/ledger", params={"from": "2019-01-01", "to": "2018-01-01"}).status_code == 422

    # the CSV downloads, one row per receipt (with a BOM for spreadsheets)
    got = env.http.get("/api/ledger.csv", params={"merchant": "book"})
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(got.content.decode("utf-8-sig"))))
    assert sorted(float(r["total"]) for r in rows) == [9.0, 12.5] and {r["date"] for r in rows} == {"2018-12-25"}

    # a category rule changed by the user files the receipts the rules filed again (the hand-filed one stays)
    cats = env.http.put("/api/categories/books", json={"keywords": ["book"], "position": 0}, headers=KEY).json()
    assert cats["refiled"] == 1 and cats["categories"][0] == {"name": "books", "keywords": ["BOOK"], "position": 0}
    assert env.http.get(f"/api/receipts/{dup['id']}").json()["category"] == "books"
    assert env.http.get(f"/api/receipts/{rid}").json()["category"] == "gifts"

    # delete: the receipt and its photo go; the other receipt stays
    gone = env.http.delete(f"/api/receipts/{rid}", headers=KEY).json()
    assert gone == {"receipt_id": rid, "original_deleted": True}
    assert env.http.get(f"/api/receipts/{rid}").status_code == 404
    assert env.http.delete(f"/api/receipts/{rid}", headers=KEY).status_code == 404
    assert [x["id"] for x in env.http.get("/api/ledger").json()["receipts"]] == [dup["id"]]


def test_bad_receipt_uploads_are_refused(env):
    assert _upload(env, [("notes.txt", b"not a photo")]).status_code in (415, 422)
    r = env.http.post("/api/receipts", headers=KEY, files=[("files", ("a.txt", b"hello", "text/plain"))])
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    assert env.http.get("/api/receipts/999999").status_code == 404
    assert env.http.patch("/api/receipts/999999", json={"total": 1}, headers=KEY).status_code == 404


def test_cli_ingests_a_folder_into_the_same_ledger(env, tmp_path, capsys, monkeypatch):
    from clip_embedder.scripts import extract_receipt

    folder = tmp_path / "receipts"
    folder.mkdir()
    for n in ("009", "015"):
        (folder / f"{n}.jpg").write_bytes((RECEIPTS / "img" / f"{n}.jpg").read_bytes())
    monkeypatch.setenv("DATABASE_URL", env.db_url)
    monkeypatch.setenv("STORAGE_ROOT", str(env.tmp / "originals"))
    assert extract_receipt.main(["--extractor", "rules", "--ingest", str(folder)]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["new"] for o in out] == [True, True]
    ledger = {x["id"]: x for x in env.http.get("/api/ledger").json()["receipts"]}
    assert {out[0]["receipt_id"], out[1]["receipt_id"]} <= set(ledger)
    assert ledger[out[1]["receipt_id"]]["date"] == "2017-12-22"  # 015's key file: 22/12/2017
    assert env.http.get(f"/api/receipts/{out[0]['receipt_id']}/file").status_code == 200
    assert extract_receipt.main(["--extractor", "rules", "--ingest", str(folder / "009.jpg")]) == 0
    assert json.loads(capsys.readouterr().out)["new"] is False
