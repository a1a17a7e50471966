"""Index → search round trips on the embedded PostgreSQL, FAISS rebuilds, space identities."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from clip_embedder.db.records import ImageRow, ItemRow
from clip_embedder.indexing.batch import STAGES
from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.faiss_index import SpaceIndex
from clip_embedder.indexing.pipeline import Indexer
from clip_embedder.models.embedders import SpaceIdentity, SpaceMismatchError, create_embedder
from clip_embedder.search.records import QueryError
from clip_embedder.search.service import SearchService
from tests.helpers import gt_classes, subset_files


def image_id_of(store, path) -> int:
    from clip_embedder.images import sha256_bytes

    return store.images.ids_by_sha([sha256_bytes(path.read_bytes())])[sha256_bytes(path.read_bytes())]


def test_index_counts(indexed, store):
    assert indexed.indexed == 74 and indexed.failed == 0
    counts = store.counts()
    assert counts["images"] == 74 and counts["objects"] == indexed.objects > 74
    for space in ("mobilenet", "text", "clip"):
        assert counts[f"vectors_{space}"] == 74 + indexed.objects  # one whole image + each crop
    assert set(indexed.timings) == set(STAGES)


def test_rerun_indexes_nothing_twice(indexed, store, detector, embedders, settings, subset):
    before = store.counts()
    idx = Indexer.from_settings(settings, store, detector, embedders)
    stats = idx.run(subset_files(subset), progress=False)
    assert (stats.indexed, stats.skipped, stats.updated, stats.objects) == (0, 74, 0, 0)
    assert store.counts() == before


def test_image_searched_by_itself_comes_first(service, store, subset):
    for path, _ in subset_files(subset)[::15]:
        r = service.search_image(Image.open(path), top_k=5)
        assert r.image_neighbours[0].image_id == image_id_of(store, path)
        assert r.image_neighbours[0].similarity == pytest.approx(1.0, abs=1e-4)
        assert set(r.spaces) == {"mobilenet", "clip"}  # pixel spaces serve image queries


def test_object_neighbours_and_same_class(service, subset):
    path = subset / "train" / "images" / "000000000036.jpg"
    if not path.exists():
        path = subset_files(subset)[0][0]
    r = service.search_image(Image.open(path), top_k=8, same_class=True)
    searched = [o for o in r.objects if not o.skipped]
    assert searched, "the query image should have at least one cropped object"
    for o in searched:
        assert o.neighbours and all(h.label == o.detection.label and h.kind == "object" for h in o.neighbours)
        # the query's own crop is in the index: the best neighbour is (nearly) identical
        assert o.neighbours[0].similarity > 0.95


def test_each_object_of_an_indexed_image_finds_its_own_crop_first(service, store, subset):
    """Every object's neighbours come from one batched search per space and one lookup for all lists: each row
    must stay with its object (an indexed image's objects each find their own crop first)."""
    import numpy as np

    for path, _ in subset_files(subset):
        r = service.search_image(Image.open(path), top_k=3)
        searched = [o for o in r.objects if not o.skipped]
        if len(searched) >= 3:
            break
    else:
        pytest.fail("no subset image with three cropped objects")
    image_id = image_id_of(store, path)
    for o in searched:
        best = o.neighbours[0]
        assert best.image_id == image_id and best.kind == "object" and best.label == o.detection.label
        assert np.allclose(best.bbox, o.detection.bbox, atol=1.0), (best.bbox, o.detection.bbox)
    assert len({o.neighbours[0].item_id for o in searched}) == len(searched)


def test_text_search_handbag(service, store, subset):
    r = service.search_text("handbag", top_k=10)
    hits, spaces = r.hits, r.spaces
    assert spaces == ["text", "clip"]
    gt = gt_classes(subset)
    files = {h.image_id: store.images.get(h.image_id).image.file_name for h in hits}
    with_handbag = [f for f in files.values() if "handbag" in gt.get(f, set())]
    assert with_handbag, f"no image annotated with a handbag in the top 10: {files}"
    assert len({h.image_id for h in hits}) == len(hits)  # one hit per image
    filtered = service.search_text("bag", top_k=10, label="handbag").hits
    assert filtered and all(h.label == "handbag" for h in filtered)


def test_text_query_errors(service):
    with pytest.raises(QueryError, match="empty"):
        service.search_text("   ")
    with pytest.raises(QueryError, match="cannot serve a text query"):
        service.search_text("car", spaces=["mobilenet"])


def test_faiss_deleted_or_corrupt_is_rebuilt_with_identical_results(service, store, settings, subset):
    query = Image.open(subset_files(subset)[3][0])
    before = service.search_image(query, top_k=10)
    for space in service.indexes:
        idx_path, meta_path = SpaceIndex.paths(settings.faiss_dir, space)
        assert idx_path.exists() and meta_path.exists()
        idx_path.unlink()
    service2 = SearchService.create(settings, store, service.detector)
    assert all(ix.rebuilt == "rebuilt: missing" for ix in service2.indexes.values())
    after = service2.search_image(query, top_k=10)
    key = lambda r: ([(h.item_id, round(h.score, 6)) for h in r.image_neighbours],  # noqa: E731
                     [[h.item_id for h in o.neighbours] for o in r.objects])
    assert key(after) == key(before)
    # a truncated file is rebuilt too; a current one is loaded as is
    p = SpaceIndex.paths(settings.faiss_dir, "text")[0]
    p.write_bytes(p.read_bytes()[:100])
    service3 = SearchService.create(settings, store, service.detector)
    assert service3.indexes["text"].rebuilt.startswith("rebuilt: unreadable")
    assert service3.indexes["mobilenet"].rebuilt == ""
    assert key(service3.search_image(query, top_k=10)) == key(before)


def test_faiss_matches_exact_search_in_postgres(service, store):
    ix = service.indexes["mobilenet"]
    q = store.vectors.stream("mobilenet").__next__()[1][:1]
    D, ids = ix.search(q, 5)
    with store.conn() as c:
        rows = c.execute("SELECT item_id, 1 - (embedding <=> %s) AS sim FROM vectors_mobilenet "
                         "ORDER BY embedding <=> %s LIMIT 5", (q[0], q[0])).fetchall()
    assert list(ids[0]) == [r["item_id"] for r in rows]
    assert np.allclose(D[0], [r["sim"] for r in rows], atol=1e-4)


def test_space_built_by_another_model_is_refused(store, settings, detector, indexed):
    real = store.spaces.get("text")
    other = SpaceIdentity("text", real.model, "0" * 64, real.dim)
    with pytest.raises(SpaceMismatchError, match="built by"):
        store.spaces.ensure(other)
    with store.conn() as c:  # simulate an index built by another model
        c.execute("UPDATE spaces SET weights=%s WHERE name='text'", ("f" * 64,))
    try:
        svc = SearchService.create(settings, store, detector)
        assert "text" in svc.refused and "text" not in svc.indexes
        with pytest.raises(QueryError, match="cannot be queried") as e:
            svc.search_text("car", spaces=["text"])
        assert e.value.status == 409
        r = svc.search_text("car")
        assert r.spaces == ["clip"] and any("space text not used" in w for w in r.warnings)
    finally:
        with store.conn() as c:
            c.execute("UPDATE spaces SET weights=%s WHERE name='text'", (real.weights,))


def test_space_whose_model_cannot_load_is_refused(store, settings, detector, indexed):
    # a space built with hub weights, served where those weights cannot be had (offline)
    real = store.spaces.get("clip")
    with store.conn() as c:
        c.execute("UPDATE spaces SET weights='no-such-hub-tag' WHERE name='clip'")
    try:
        s = settings.model_copy(update={"clip_pretrained": "no-such-hub-tag"})
        svc = SearchService.create(s, store, detector)
        assert "clip" not in svc.indexes and "CLIP_PRETRAINED" in svc.refused["clip"]
        r = svc.search_text("car")
        hits, spaces, warnings = r.hits, r.spaces, r.warnings
        assert spaces == ["text"] and hits and any("space clip not used" in w for w in warnings)
    finally:
        with store.conn() as c:
            c.execute("UPDATE spaces SET weights=%s WHERE name='clip'", (real.weights,))


def test_batch_write_is_atomic(store, indexed):
    before = store.counts()
    bad = ImageRow(sha256="a" * 64, path="/nowhere.jpg", width=10, height=10, split=None, description="x",
                   detector_sha256=None, items=[ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x",
                                                        {"mobilenet": np.ones(3, np.float32)})])  # wrong dim
    import psycopg

    with pytest.raises(psycopg.errors.DataException, match="expected 1024 dimensions"):
        store.batches.write([bad])
    assert store.counts() == before and not store.images.ids_by_sha(["a" * 64])


def test_new_space_fills_images_indexed_before(settings, store, detector, subset, tmp_path):
    from clip_embedder.config import Settings

    s = Settings(**{**settings.model_dump(), "pgdata_dir": tmp_path / "pg", "faiss_dir": tmp_path / "faiss"})
    from clip_embedder.db.store import Store

    st = Store.open(s)
    try:
        files = subset_files(subset)[:4]
        text = {"text": create_embedder("text", s).load()}
        st.spaces.ensure(text["text"].identity)
        Indexer(st, detector, text, CropPolicy(), max_bytes=10**7, max_pixels=10**8).run(files, progress=False)
        both = {**text, "mobilenet": create_embedder("mobilenet", s).load()}
        st.spaces.ensure(both["mobilenet"].identity)
        stats = Indexer(st, detector, both, CropPolicy(), max_bytes=10**7, max_pixels=10**8).run(files, progress=False)
        assert stats.updated == 4 and stats.indexed == 0
        c = st.counts()
        assert c["vectors_mobilenet"] == c["vectors_text"] == c["objects"] + 4
    finally:
        st.close()


def test_lexical_hits_are_typed_and_ordered(indexed, store):
    """`lexical_search` maps its rows straight into `LexicalHit`: Python types as annotated (no Decimal, no numpy),
    strong matches first, then by rank; each hit's image and detection score as stored."""
    hits = store.lexical.search(["person", "car"], 50)
    assert hits and len(hits) <= 50
    for h in hits:
        assert type(h.item_id) is int and type(h.rank) is float and type(h.strong) is bool
        assert type(h.image_id) is int and (h.score is None or type(h.score) is float)
    assert [(not h.strong, -h.rank) for h in hits] == sorted((not h.strong, -h.rank) for h in hits)
    rows = store.items.get([h.item_id for h in hits])
    assert all(rows[h.item_id].image_id == h.image_id and rows[h.item_id].score == h.score for h in hits)






def test_hnsw_index_type(service, store, settings, tmp_path):
    """FAISS_INDEX=HNSW32: the saved Flat index is rebuilt as HNSW; searches and filters still work."""
    import shutil

    for space in ("mobilenet", "text"):
        for p in SpaceIndex.paths(settings.faiss_dir, space):
            shutil.copy(p, tmp_path / p.name)
    s = settings.model_copy(update={"faiss_dir": tmp_path, "faiss_index": "HNSW32", "faiss_ef_search": 64})
    ix = SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), s)
    assert ix.hnsw and ix.rebuilt == "rebuilt: index type Flat → HNSW32"
    flat = service.indexes["mobilenet"]
    ids, vecs = next(store.vectors.stream("mobilenet", batch=50))
    D, nearest = ix.search(vecs, 5)
    assert (nearest[:, 0] == ids).mean() > 0.95  # each vector finds itself first
    _, exact = flat.search(vecs, 10)
    _, approx = ix.search(vecs, 10)
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]) > 0.9
    _, only_images = ix.search(vecs[:3], 5, kind="image")
    kinds = dict(zip(ix.meta["ids"], ix.meta["kind"]))
    assert all(kinds[i] == "image" for i in only_images.ravel() if i >= 0)
    assert SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), s).rebuilt == ""  # saved as HNSW
    # FAISS_INDEX=auto chooses by size: this space is below the default threshold (exact), above a small one (HNSW)
    auto = settings.model_copy(update={"faiss_dir": tmp_path, "faiss_index": "auto"})
    assert not SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), auto).hnsw
    small = auto.model_copy(update={"faiss_approx_above": 100, "faiss_large_index": "IVF4,SQ8"})
    assert SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), small).ivf


def test_indexing_refuses_files_over_the_caps(settings, store, detector, embedders, subset, tmp_path):
    big = subset_files(subset)[0][0]
    bomb = tmp_path / "bomb.png"
    Image.new("L", (11000, 11000)).save(bomb)  # 121 Mpx in a few hundred KB
    idx = Indexer.from_settings(settings.model_copy(update={"index_max_bytes": big.stat().st_size - 1,
                                                                  "index_max_pixels": 10**8}), store,
                                detector, embedders)
    stats = idx.run([(big, None), (bomb, None)], progress=False)
    assert stats.failed == 2 and stats.indexed == 0
    assert "INDEX_MAX_BYTES" in stats.errors[0] and "INDEX_MAX_PIXELS" in stats.errors[1]


def test_background_build_serves_exact_search_meanwhile(service, store, settings, tmp_path):
    """The API's cold start: with no FAISS file, an exact Flat index serves at once while HNSW32 builds in a
    thread; the built index is swapped in (same answers on these self-queries), saved, and loads next time."""
    s = settings.model_copy(update={"faiss_dir": tmp_path, "faiss_index": "HNSW32"})
    ix = SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), s, background=True)
    assert ix.upgrade is not None and "exact Flat while HNSW32 builds" in ix.rebuilt
    ids, vecs = next(store.vectors.stream("mobilenet", batch=20))
    _, found = ix.search(vecs, 1)  # answers during (or after) the build
    assert (found[:, 0] == ids).all()
    ix.upgrade.join(60)
    assert ix.hnsw and ix.index_type == "HNSW32" and "built in the background" in ix.rebuilt
    _, found = ix.search(vecs, 1)
    assert (found[:, 0] == ids).mean() > 0.95 and ix.ntotal == store.vectors.watermark("mobilenet")[0]
    again = SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), s, background=True)
    assert again.rebuilt == "" and again.hnsw and again.upgrade is None


def test_pgvector_index_follows_the_setting(settings, tmp_path):
    """PGVECTOR_INDEX=none: a vectors table without pgvector's HNSW index (cheaper writes at scale); hnsw (the
    default) builds it over the rows already there; none again drops it. The vectors stay either way."""
    import numpy as np

    from clip_embedder.db.records import ImageRow, ItemRow
    from clip_embedder.db.store import Store
    from clip_embedder.models.embedders import SpaceIdentity

    identity = SpaceIdentity("text", "test-model", "w", 8)

    def has_index(kind: str) -> bool:
        store = Store.open(settings.model_copy(update={"pgdata_dir": tmp_path / "pg", "pgvector_index": kind}))
        try:
            store.spaces.ensure(identity)
            if not store.vectors.watermark("text")[0]:
                vec = {"text": np.eye(8, dtype=np.float32)[0]}
                store.batches.write([ImageRow("e" * 64, "/x.jpg", 10, 10, None, "x", None,
                                            [ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x", vec)])])
            assert store.vectors.watermark("text")[0] == 1
            with store.conn() as c:
                return c.execute("SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'vectors_text_hnsw'"
                                 ).fetchone()["n"] == 1
        finally:
            store.close()

    assert not has_index("none")
    assert has_index("hnsw")
    assert not has_index("none")


def test_ivf_index_type_and_copy_streaming(service, store, settings, tmp_path):
    """FAISS_INDEX=IVF…: trained on the space's vectors, searched with FAISS_NPROBE lists, filters work; a space
    too small to train falls back to exact Flat. Vectors streamed by COPY BINARY equal the stored ones."""
    ids, vecs = next(store.vectors.stream("mobilenet", batch=40))
    assert len(ids) == 40 and vecs.dtype == np.float32 and np.all(np.diff(ids) > 0)
    with store.conn() as c:
        stored = {r["item_id"]: r["embedding"].to_numpy() for r in c.execute(
            "SELECT item_id, embedding FROM vectors_mobilenet WHERE item_id = ANY(%s)", (ids[:5].tolist(),))}
    assert all(np.array_equal(stored[i], v) for i, v in zip(ids[:5], vecs[:5]))
    assert sum(len(i) for i, _ in store.vectors.stream("mobilenet", after_id=int(ids[9]))) == \
        store.vectors.watermark("mobilenet")[0] - 10
    s = settings.model_copy(update={"faiss_dir": tmp_path, "faiss_index": "IVF4,PQ32x4fs", "faiss_nprobe": 4})
    ix = SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), s)
    assert ix.ivf and ix.index_type == "IVF4,PQ32x4fs" and ix.ntotal == store.vectors.watermark("mobilenet")[0]
    _, exact = service.indexes["mobilenet"].search(vecs, 10)
    _, approx = ix.search(vecs, 10)  # all 4 lists probed: only the 16-byte codes lose recall
    assert np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact)]) > 0.5
    _, only_images = ix.search(vecs[:3], 5, kind="image")
    kinds = dict(zip(ix.meta["ids"], ix.meta["kind"]))
    assert all(kinds[i] == "image" for i in only_images.ravel() if i >= 0)
    assert SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), s).rebuilt == ""  # the trained file loads
    big = s.model_copy(update={"faiss_index": "IVF1024,Flat"})  # needs 39,936 vectors to train
    assert not SpaceIndex.for_settings(store, store.spaces.get("mobilenet"), big).ivf


@pytest.mark.parametrize("index_type", ["Flat", "HNSW32", "IVF4,Flat"])
def test_sync_follows_writes_and_deletes(indexed, store, subset, tmp_path, index_type):
    """`SpaceIndex.sync` (what the API's follower calls): new vectors are added in place, deleted ones
    removed (HNSW cannot remove: its graph is rebuilt from the vectors that stay)."""
    identity = store.spaces.get("text")
    ix = SpaceIndex.load_or_build(store, identity, tmp_path, index_type=index_type)
    n0 = ix.ntotal
    vec = {s.name: np.eye(s.dim, dtype=np.float32)[1] for s in store.spaces.identities()}
    ids = store.batches.write([ImageRow("d" * 64, str(subset_files(subset)[0][0]), 10, 10, None, "x", None,
                                      [ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x", vec)])])
    try:
        assert ix.sync(store) == {"added": 1, "removed": 0} and ix.ntotal == n0 + 1
        item = store.images.get(ids[0]).image_item_id
        D, found = ix.search(vec["text"][None], 1, kind="image")
        assert found[0][0] == item
    finally:
        removed = store.images.delete(ids[0])
    assert ix.sync(store, removed.item_ids) == {"added": 0, "removed": 1}
    assert ix.ntotal == n0 == store.vectors.watermark("text")[0] and item not in ix.meta["ids"]
    D, found = ix.search(vec["text"][None], 5)
    assert item not in found[0]
    # a missed notification: the counts disagree, and sync reconciles the id sets exactly
    with store.conn() as c:
        some = c.execute("SELECT item_id FROM vectors_text ORDER BY item_id LIMIT 1").fetchone()["item_id"]
    ix._remove(np.array([some]))
    assert ix.sync(store) == {"added": 1, "removed": 0} and ix.ntotal == n0


def test_a_foreign_faiss_file_is_rebuilt_not_loaded(service, store, settings, tmp_path):
    """The file of another space with the same vector count (its JSON left in place), a file of the same
    dimension holding other ids, and temp files of a killed write."""
    import faiss

    faiss_dir = tmp_path / "faiss"
    for space in ("text", "mobilenet"):
        SpaceIndex.load_or_build(store, store.spaces.get(space), faiss_dir)
    text_idx, _ = SpaceIndex.paths(faiss_dir, "text")
    mob_idx, _ = SpaceIndex.paths(faiss_dir, "mobilenet")
    text_idx.write_bytes(mob_idx.read_bytes())  # same count (every item is in both), other dim
    ix = SpaceIndex.load_or_build(store, store.spaces.get("text"), faiss_dir)
    assert ix.rebuilt.startswith("rebuilt: foreign file (dim 1024") and ix.index.d == 384
    # same dim, same count, other ids: caught by the ids fingerprint
    other = faiss.read_index(str(text_idx))
    ids = faiss.vector_to_array(other.id_map)
    vecs = np.vstack([other.reconstruct(int(i)) for i in ids])
    fake = faiss.IndexIDMap2(faiss.IndexFlatIP(384))
    fake.add_with_ids(vecs, ids + 10**9)
    faiss.write_index(fake, str(text_idx))
    ix = SpaceIndex.load_or_build(store, store.spaces.get("text"), faiss_dir)
    assert ix.rebuilt.startswith("rebuilt: foreign file (its ids differ")
    D, found = ix.search(vecs[:1], 1)
    assert found[0][0] < 10**9
    # an orphan temp file of a killed write is removed; a fresh one (a write in progress elsewhere) stays
    old, new = faiss_dir / "text.faiss.abc.tmp", faiss_dir / "text.json.def.tmp"
    old.write_bytes(b"x")
    new.write_bytes(b"y")
    import os
    import time as _time

    os.utime(old, (_time.time() - 3600, _time.time() - 3600))
    assert SpaceIndex.load_or_build(store, store.spaces.get("text"), faiss_dir).rebuilt == ""
    assert not old.exists() and new.exists()


def test_write_behind_writes_a_photo_once_across_batches(settings, store, detector, embedders, indexed, subset,
                                                         tmp_path):
    """The sequential runner writes batch N while batch N+1 is computed: the same bytes in two consecutive
    batches (planned before the first is committed) still make one image with one set of items."""
    import hashlib
    import shutil

    from tests.helpers import IMAGES

    indexed_names = {p.name for p, _ in subset_files(subset)}
    src = next(p for p in sorted(IMAGES.glob("*.jpg")) if p.name not in indexed_names)
    a, b = tmp_path / "a.jpg", tmp_path / "b.jpg"
    shutil.copyfile(src, a)
    shutil.copyfile(src, b)
    idx = Indexer.from_settings(settings, store, detector, embedders)
    stats = idx.run([(a, None), (b, None)], batch_size=1, progress=False)
    sha = hashlib.sha256(a.read_bytes()).hexdigest()
    image = store.images.by_sha(sha)
    try:
        assert stats.indexed == 1 and stats.failed == 0 and stats.seen == 2
        with store.conn() as c:
            n_images = c.execute("SELECT count(*) AS n FROM images WHERE sha256 = %s", (sha,)).fetchone()["n"]
            r = c.execute("SELECT count(*) AS n, count(DISTINCT (kind, label, x1, y1, x2, y2)) AS d, "
                          "count(*) FILTER (WHERE kind = 'image') AS whole FROM items WHERE image_id = %s",
                          (image.id,)).fetchone()
        assert n_images == 1 and r["whole"] == 1 and r["n"] == r["d"]  # no item written twice
    finally:
        store.images.delete(image.id)


def test_item_meta_matches_the_rows_in_chunks_and_after_an_id(indexed, store, service):
    """`item_meta` (packed by PostgreSQL, read by numpy) gives each vector's id, kind, label, image id and detection
    score in id order, whatever the chunk size, from any id on, labels with a tab, a backslash or a newline
    included; the served index answers item → (image, score) from it as the database does."""
    import math

    odd = ["tab\there", "back\\slash", "new\nline", "ünïcødé"]
    unit = np.ones(384, np.float32) / np.sqrt(384)
    ids = store.batches.write([ImageRow("f" * 64, "/odd.jpg", 10, 10, None, "x", None,
                                      [ItemRow("image", None, None, (0, 0, 10, 10), (0, 0, 10, 10), "x",
                                               vectors={"text": unit})]
                                      + [ItemRow("object", lab, 0.5 + k / 10, (0, 0, 5, 5), (0, 0, 5, 5), lab,
                                                 vectors={"text": unit}) for k, lab in enumerate(odd)])])
    try:
        with store.conn() as c:
            want = [(r["id"], r["kind"], r["label"] or "", r["image_id"], r["score"]) for r in c.execute(
                "SELECT i.id, i.kind, i.label, i.image_id, i.score FROM vectors_text v JOIN items i "
                "ON i.id = v.item_id ORDER BY i.id")]
        assert len(want) > 100 and want[-1][3] == ids[0]

        def rows(meta):
            return [(i, k, lab, im, None if math.isnan(sc) else pytest.approx(sc, abs=1e-6))
                    for i, k, lab, im, sc in zip(meta["ids"].tolist(), meta["kind"], meta["label"],
                                                 meta["image_id"].tolist(), meta["score"].tolist())]
        for chunk in (2_000_000, 37):
            assert rows(store.vectors.item_meta("text", chunk=chunk)) == want
        after = want[-3][0]
        meta = store.vectors.item_meta("text", after_id=after, chunk=1)
        assert rows(meta) == [w for w in want if w[0] > after]
        assert meta["ids"].dtype == meta["image_id"].dtype == np.int64 and list(meta["label"][-2:]) == odd[-2:]
        # the same fields by id (live updates), vectors included; ids without a vector are left out
        vecs, by_id = store.vectors.by_id("text", [w[0] for w in want[-6:]] + [10**12])
        assert rows(by_id) == want[-6:] and vecs.shape == (6, 384) and vecs.dtype == np.float32
        assert np.allclose(vecs[-5:], unit, atol=1e-6)
        assert {k: v.dtype for k, v in by_id.items()} == {k: v.dtype for k, v in meta.items()}
        ix = service.indexes["text"]
        ix.sync(store, [])
        got = ix.item_images([w[0] for w in want] + [10**12])
        assert got == {w[0]: (w[3], None if w[4] is None else pytest.approx(w[4], abs=1e-6)) for w in want}
    finally:
        with store.conn() as c:
            c.execute("DELETE FROM images WHERE id = ANY(%s)", (ids,))
        service.indexes["text"].sync(store, [])


