"""The Ray runner (`embed_and_index --runner ray`) writes the same rows as the sequential runner.

A local Ray cluster with two actors, each holding the real detector, MobileNet, MiniLM, the ImageNet tagger
and RapidOCR, indexes real COCO128 images (plus a truncated file and a duplicate) in batches of 4 into one
embedded PostgreSQL; the sequential runner indexes the same folder into another. Every image, item, tag, OCR
line and vector is compared (ids aside: the actors' batches commit in any order).
"""
from __future__ import annotations

import shutil

import numpy as np

from tests.helpers import IMAGENET_LABELS, IMAGES, MOBILENET, TAGGER_HEAD, YOLO_WEIGHTS


def dump(settings) -> tuple[dict, dict]:
    """sha256 → (image row, sorted items with tags) and (sha256, item key, space) → vector, from one database."""
    from clip_embedder.db.store import Store

    store = Store.open(settings)
    try:
        with store.conn() as c:
            images = {r["sha256"]: r for r in c.execute(
                "SELECT id, sha256, file_name, width, height, description, ocr_text, enrichment, detector_sha256 "
                "FROM images")}
            by_id = {r["id"]: r["sha256"] for r in images.values()}
            items: dict[str, list] = {sha: [] for sha in images}
            key_of: dict[int, tuple] = {}
            tags: dict[int, list] = {}
            for t in c.execute("SELECT item_id, source, label, score::float8 AS s FROM tags"):
                tags.setdefault(t["item_id"], []).append((t["source"], t["label"], float(t["s"])))
            for r in c.execute("SELECT id, image_id, kind, label, score, x1, y1, x2, y2, crop_x1, crop_y1, crop_x2, "
                               "crop_y2, description, keywords, keywords_weak FROM items"):
                key = (r["kind"], r["label"], tuple(round(float(r[k])) for k in ("x1", "y1", "x2", "y2")))
                key_of[r["id"]] = key
                items[by_id[r["image_id"]]].append(
                    (*key, float(r["score"] or 0), (r["crop_x1"], r["crop_y1"], r["crop_x2"], r["crop_y2"]),
                     r["description"], r["keywords"], r["keywords_weak"], sorted(tags.get(r["id"], []))))
            ocr = {}
            for r in c.execute("SELECT image_id, text, confidence::float8 AS conf FROM ocr_lines "
                               "ORDER BY image_id, y1, x1"):
                ocr.setdefault(by_id[r["image_id"]], []).append((r["text"], float(r["conf"])))
            vectors = {}
            for space in settings.spaces:
                for r in c.execute(f"SELECT v.item_id, v.embedding, i.image_id FROM vectors_{space} v "
                                   "JOIN items i ON i.id = v.item_id"):
                    vectors[(by_id[r["image_id"]], key_of[r["item_id"]], space)] = np.asarray(r["embedding"].to_numpy())
        rows = {sha: ({k: v for k, v in im.items() if k != "id"}, sorted(items[sha]), ocr.get(sha, []))
                for sha, im in images.items()}
        return rows, vectors
    finally:
        store.close()


def same(a, b) -> bool:
    """Equal structures; numbers within 0.01 + 0.2 % (boxes within ~1 px, scores within ~0.01: actors run the models
    with one thread, the sequential runner with two, so float sums differ in the last bits)."""
    if isinstance(a, float | int) and isinstance(b, float | int) and not isinstance(a, bool):
        return abs(a - b) <= 0.01 + 0.002 * max(abs(a), abs(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def test_ray_runner_writes_the_same_rows_as_the_sequential_runner(tmp_path, monkeypatch, capsys):
    from clip_embedder.config import Settings
    from clip_embedder.scripts import embed_and_index

    folder = tmp_path / "photos"
    folder.mkdir()
    files = sorted(IMAGES.glob("*.jpg"))[20:34]
    for p in files:
        shutil.copy(p, folder / p.name)
    shutil.copy(files[0], folder / "same_as_first.jpg")
    (folder / "broken.jpg").write_bytes(files[1].read_bytes()[:2000])
    env = {"DETECTOR_WEIGHTS": YOLO_WEIGHTS, "MOBILENET_WEIGHTS": MOBILENET, "SPACES": "mobilenet,text",
           "DATABASE_URL": "", "TAGGER_WEIGHTS": TAGGER_HEAD, "TAGGER_LABELS": IMAGENET_LABELS, "OCR": "rapidocr"}
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(tmp_path)  # relative paths below: the actors get them made absolute
    runs = {}
    for runner in ("sequential", "ray"):
        monkeypatch.setenv("PGDATA_DIR", f"pg_{runner}")
        monkeypatch.setenv("FAISS_DIR", f"faiss_{runner}")
        args = ["--dataset_path", str(folder), "--no-progress", "--batch-size", "4", "--runner", runner]
        assert embed_and_index.main(args + (["--ray-actors", "2"] if runner == "ray" else [])) == 0
        out = capsys.readouterr()
        assert f"runner={runner}" in out.out and "failed=1" in out.out and "broken.jpg" in out.err, out
        assert (tmp_path / f"faiss_{runner}" / "mobilenet.faiss").exists()
        runs[runner] = dump(Settings(_env_file=None))
    assert "actors_load=" in out.out
    rows_seq, vec_seq = runs["sequential"]
    rows_ray, vec_ray = runs["ray"]
    assert len(rows_seq) == len(files) and sum(len(r[1]) for r in rows_seq.values()) > len(files)
    assert any(r[2] for r in rows_seq.values())  # some photos have OCR text
    assert rows_ray.keys() == rows_seq.keys()
    for sha, row in rows_seq.items():
        assert same(rows_ray[sha], row), (rows_ray[sha], row)
    assert vec_ray.keys() == vec_seq.keys()
    for key, v in vec_seq.items():  # thread counts differ between runners: float noise only
        assert np.allclose(vec_ray[key], v, atol=1e-3), key


def test_copies_of_a_photo_settle_on_the_first_path_whichever_batch_committed_first(store):
    """The race the Ray runner can lose: the batch holding a photo's later copy commits first, and the batch holding
    the first copy then skips it as stored. The driver moves the record to the first path; a photo stored before
    the run (no batch saw it new) keeps its path, as with the sequential runner."""
    from clip_embedder.db.records import ImageRow, ItemRow
    from clip_embedder.indexing.batch import SourceFile
    from clip_embedder.indexing.ray_runner import Copies

    sources = [SourceFile(f"/photos/{n}.jpg", f"{n}.jpg", None, "file") for n in ("a", "b", "c", "d", "e")]
    raced, old = "1" * 64, "2" * 64
    ids = store.batches.write([ImageRow(sha, path, 10, 10, None, "x", None,
                                      [ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x")],
                                      file_name=path.rsplit("/", 1)[1], storage="file")
                             for sha, path in ((raced, "/photos/d.jpg"), (old, "/photos/e.jpg"))])
    try:
        copies = Copies(sources)
        copies.add([("/photos/c.jpg", "3" * 64, True), ("/photos/d.jpg", raced, True)])  # committed first
        copies.add([("/photos/a.jpg", raced, False), ("/photos/b.jpg", old, False)])      # found both stored
        copies.add([("/photos/e.jpg", old, False)])
        moves = copies.moves()
        assert [(m[0], m[1], m[2]) for m in moves] == [(raced, "/photos/a.jpg", "a.jpg")]
        assert store.images.repoint(moves) == 1
        assert store.images.repoint(moves) == 0  # already there
        with store.conn() as c:
            rows = {r["sha256"]: (r["path"], r["file_name"]) for r in
                    c.execute("SELECT sha256, path, file_name FROM images WHERE id = ANY(%s)", (ids,))}
        assert rows == {raced: ("/photos/a.jpg", "a.jpg"), old: ("/photos/e.jpg", "e.jpg")}
    finally:
        with store.conn() as c:
            c.execute("DELETE FROM images WHERE id = ANY(%s)", (ids,))
