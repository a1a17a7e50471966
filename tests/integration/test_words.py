"""Words the index understands: ImageNet tags, OCR (RapidOCR, Tesseract kor+eng), hybrid lexical + dense text
search, an honest "no match", re-enrichment when the tagger / OCR configuration changes.

One index of real photos: the nine photos of ../shared/datasets/photos, four COCO128 images, and two COCO128
photos with a sign rendered onto them (English, Korean). Real weights, real OCR engines, the embedded PostgreSQL.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import FONTS, IMAGENET_LABELS, IMAGES, MOBILENET, PHOTOS, TAGGER_HEAD, YOLO_WEIGHTS, render_sign

COCO_PICKS = ["000000000034.jpg", "000000000036.jpg", "000000000009.jpg", "000000000030.jpg"]  # zebra, umbrella, …
SIGNS = {"sign_en.jpg": ("000000000049.jpg", "PHARMACY", "en"), "sign_ko.jpg": ("000000000061.jpg", "김치찌개", "ko")}


class Words:
    """A library folder, its settings, and helpers to (re)index it and search it."""

    def __init__(self, tmp):
        from clip_embedder.config import Settings
        from clip_embedder.db.store import Store
        from clip_embedder.models.detector import load_detector
        from clip_embedder.models.embedders import create_embedder

        self.folder = tmp / "library"
        self.folder.mkdir()
        for p in sorted(PHOTOS.glob("*.jpg")):
            shutil.copyfile(p, self.folder / p.name)  # copies: nothing here may write into ../shared
        for name in COCO_PICKS:
            shutil.copyfile(IMAGES / name, self.folder / name)
        for name, (src, text, lang) in SIGNS.items():
            render_sign(IMAGES / src, text, self.folder / name, FONTS[lang])
        self.settings = Settings(_env_file=None, pgdata_dir=tmp / "pg", faiss_dir=tmp / "faiss",
                                 detector_weights=str(YOLO_WEIGHTS), mobilenet_weights=MOBILENET,
                                 tagger_weights=TAGGER_HEAD, tagger_labels=IMAGENET_LABELS,
                                 spaces=["mobilenet", "text"], ocr="off")
        self.store = Store.open(self.settings)
        self.detector = load_detector(self.settings)
        self.embedders = {s: create_embedder(s, self.settings).load() for s in self.settings.spaces}
        for e in self.embedders.values():
            self.store.spaces.ensure(e.identity)

    def index(self, **overrides):
        from clip_embedder.indexing.batch import SourceFile
        from clip_embedder.indexing.pipeline import Indexer

        s = self.settings.model_copy(update=overrides)
        files = [SourceFile.from_folder(p, self.folder) for p in sorted(self.folder.iterdir())]
        return Indexer.from_settings(s, self.store, self.detector, self.embedders).run(files, progress=False)

    def service(self):
        from clip_embedder.search.service import SearchService

        return SearchService.create(self.settings, self.store, self.detector)

    def files(self, hits) -> list[str]:
        return [h.file_name for h in hits]


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    w = Words(tmp_path_factory.mktemp("words"))
    stats = w.index()
    assert stats.indexed == len(list(w.folder.iterdir())) and stats.failed == 0
    yield w
    w.store.close()


def test_tagger_reads_the_embedding_already_computed(embedders, settings):
    """The head runs on the mobilenet space's raw features (no second CNN pass) and names what real photos show;
    its words carry the label file's synonyms and WordNet hypernyms."""
    from clip_embedder.models.tagger import create_tagger

    tagger = create_tagger(settings).load()
    imgs = [Image.open(PHOTOS / "parrot.jpg").convert("RGB"), Image.open(IMAGES / "000000000034.jpg").convert("RGB"),
            Image.open(PHOTOS / "grace_hopper.jpg").convert("RGB")]
    features = embedders["mobilenet"].features(imgs)
    assert features.dtype == np.uint8 and features.shape == (3, 1024)
    # the space's vectors are exactly the dequantised, normalised features the tagger read
    assert np.allclose(embedders["mobilenet"].from_features(features), embedders["mobilenet"].embed_images(imgs))
    tags = tagger.tag(features)
    assert [t[0].label for t in tags] == ["macaw", "zebra", "military uniform"]
    assert all(t[0].score > 0.5 and all(x.score >= tagger.min_score for x in t) for t in tags)
    assert {"parrot", "bird"} <= set(tagger.words("macaw").split())
    assert "dog" in tagger.words("Labrador retriever").split() and "cat" in tagger.words("tabby").split()
    # a name of several words is one keyword (its compound), and a lexicalised one keeps no head: no "dog", no "red"
    hotdog = tagger.words("hotdog").split()
    assert {"hotdog", "redhot"} <= set(hotdog) and not {"dog", "red"} & set(hotdog), hotdog


def test_tags_and_descriptions_are_stored(words):
    parrot = words.store.images.by_sha(__import__("hashlib").sha256((PHOTOS / "parrot.jpg").read_bytes()).hexdigest())
    detail = words.store.images.get(parrot.id)
    whole = detail.tags[detail.image_item_id]
    assert whole[0].label == "macaw" and whole[0].source == "imagenet"
    assert "macaw" in detail.image.description
    with words.store.conn() as c:
        kw = c.execute("SELECT keywords FROM items WHERE id = %s", (detail.image_item_id,)).fetchone()["keywords"]
    assert {"macaw", "parrot", "bird"} <= set(kw.split())


@pytest.mark.parametrize("query,photo,k", [
    ("zebra", "000000000034.jpg", 10), ("umbrella", "000000000036.jpg", 10), ("a dog", "pets.jpg", 10),
    ("macaw", "parrot.jpg", 3), ("military uniform", "grace_hopper.jpg", 3), ("daisy", "sunflower.jpg", 3),
    ("a parrot", "parrot.jpg", 3), ("hot dog", "hot_dog.jpg", 3),
])
def test_words_beyond_the_detector_find_their_photos(words, query, photo, k):
    r = words.service().search_text(query, top_k=k)
    assert photo in words.files(r.hits), (query, words.files(r.hits), r.warnings)
    assert not any(h.weak for h in r.hits)


def test_nothing_confident_is_said_plainly(words):
    svc = words.service()
    r = svc.search_text("spaceship", top_k=10)
    assert r.hits == [] and r.warnings and "nothing in this index looks like 'spaceship'" in r.warnings[-1]
    weak = svc.search_text("spaceship", top_k=10, include_weak=True)
    assert weak.hits and all(h.weak for h in weak.hits)
    assert r.hidden_weak == len(weak.hits)


@pytest.mark.parametrize("concept,plural", [("dog", "dogs"), ("zebra", "zebras"), ("umbrella", "umbrellas"),
                                            ("spaceship", "spaceships")])
def test_the_ways_people_name_a_thing_are_one_query(words, concept, plural):
    """"dog", "a dog", "dogs", "a photo of a dog" are searched in the text space as one text ("a photo of a dog"):
    the same best similarity, the same verdict."""
    svc = words.service()
    variants = [concept, f"a {concept}", plural, f"a photo of a {concept}"]
    answers = [svc.search_text(v, top_k=10, include_weak=True) for v in variants]
    best = [max(h.spaces["text"]["similarity"] for h in a.hits if "text" in h.spaces) for a in answers]
    assert len(set(best)) == 1, dict(zip(variants, best))
    verdicts = [bool(svc.search_text(v, top_k=10).hits) for v in variants]
    assert len(set(verdicts)) == 1, dict(zip(variants, verdicts))


def test_counts_and_colours_are_checked_on_detections(words):
    """"two people" returns photos in which exactly two persons were detected (the `count` signal); "a black dog"
    the photos with a dog whose crop is black (the `colour` signal: colour names per crop, written as its keywords);
    a count or a colour of a thing the detector does not know is named in the answer as not checked."""
    svc = words.service()
    counts = words.store.items.label_counts("person")
    r = svc.search_text("two people", top_k=10)
    assert r.hits and all(counts.get(h.image_id) == 2 for h in r.hits), [counts.get(h.image_id) for h in r.hits]
    assert all("count" in h.spaces for h in r.hits)
    assert any("no object in this index is a 'spaceship'" in w for w in svc.search_text("two spaceships").warnings)
    for query, photo in (("a black dog", "pets.jpg"), ("a white kite", "kite_and_cold.jpg"),
                         ("green broccoli", "000000000009.jpg")):
        r = svc.search_text(query, top_k=5)
        assert words.files(r.hits) == [photo], (query, words.files(r.hits))
        assert "colour" in r.hits[0].spaces and r.hits[0].label == query.split()[-1]  # the coloured object is shown
    # things joined by "and" must be detected together, as often as named ("a man and a woman": two persons)
    pair = svc.search_text("a man and a woman", top_k=10)
    assert pair.hits and all(counts.get(h.image_id, 0) >= 2 for h in pair.hits), words.files(pair.hits)
    apart = svc.search_text("a zebra and a dog", top_k=5)
    assert apart.hits == [] and any("detected together" in w for w in apart.warnings), apart.warnings
    zebra = svc.search_text("a red zebra", top_k=5)
    assert zebra.hits == [] and any("no detected zebra is red" in w for w in zebra.warnings)
    red = svc.search_text("a red spaceship", top_k=5)
    assert any("colours are checked on detected objects only, and 'red' names none" in w for w in red.warnings)
    # a colour word matches no keyword: "a red tractor" is not answered by "red wine" or a hotdog's "red hot" tag
    tractor = svc.search_text("a red tractor", top_k=5)
    assert tractor.hits == [], [(h.file_name, h.spaces) for h in tractor.hits]


def test_reenrichment_reads_text_and_reembeds_only_what_changed(words):
    """OCR turned on: the indexed images are re-read, not re-detected; only descriptions that changed get new
    text vectors (mobilenet vectors untouched); a quoted word is then found, in English (RapidOCR) and, after
    switching to Tesseract kor+eng, in Korean — quoted and unquoted."""
    def vectors(space):
        with words.store.conn() as c:
            return {r["item_id"]: r["embedding"].to_numpy().copy()
                    for r in c.execute(f"SELECT item_id, embedding FROM vectors_{space}")}

    svc = words.service()
    assert svc.search_text('"PHARMACY"').hits == []
    assert "no photo in this index shows the text 'PHARMACY'" in svc.search_text('"PHARMACY"').warnings[-1]
    before = {s: vectors(s) for s in ("mobilenet", "text")}
    with words.store.conn() as c:
        n_items = c.execute("SELECT count(*) AS n FROM items").fetchone()["n"]

    stats = words.index(ocr="rapidocr")
    assert (stats.indexed, stats.reenriched, stats.objects) == (0, stats.seen, 0)
    after = {s: vectors(s) for s in ("mobilenet", "text")}
    with words.store.conn() as c:
        assert c.execute("SELECT count(*) AS n FROM items").fetchone()["n"] == n_items  # not re-detected
        changed = {r["id"] for r in c.execute("SELECT i.id FROM items i JOIN images im ON im.id = i.image_id "
                                              "WHERE i.kind = 'image' AND im.ocr_text <> ''")}
    assert all(np.array_equal(before["mobilenet"][i], after["mobilenet"][i]) for i in before["mobilenet"])
    moved = {i for i in before["text"] if not np.array_equal(before["text"][i], after["text"][i])}
    assert moved and moved <= changed  # only items whose description gained OCR text were re-embedded

    svc = words.service()
    hits = svc.search_text('"pharmacy"').hits
    assert words.files(hits)[:1] == ["sign_en.jpg"]
    detail = words.store.images.get(hits[0].image_id)
    assert any("PHARMACY" in line.text for line in detail.ocr) and "PHARMACY" in detail.image.description
    assert words.index(ocr="rapidocr").skipped == stats.seen  # nothing changed: nothing to do

    stats = words.index(ocr="tesseract")
    assert stats.reenriched == stats.seen
    svc = words.service()
    for query in ('"김치찌개"', "김치찌개"):
        r = svc.search_text(query)
        assert words.files(r.hits)[:1] == ["sign_ko.jpg"], (query, words.files(r.hits), r.warnings)


def test_api_shows_tags_text_and_the_detector_classes(words):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(words.settings)) as client:
        health = client.get("/api/health").json()
        assert health["detector"]["classes"] == 80 and "zebra" in health["detector"]["class_names"]
        assert health["relevance_floors"] == {"text": words.settings.text_min_similarity,
                                              "text:short": words.settings.text_min_similarity_short}
        r = client.get("/api/search_text", params={"query": "macaw", "top_k": 3}).json()
        parrot = next(h for h in r["results"] if h["file_name"] == "parrot.jpg")
        assert parrot["tags"][0]["label"] == "macaw" and not parrot["weak"]
        info = client.get(f"/api/images/{parrot['image_id']}").json()
        assert info["tags"][0]["label"] == "macaw" and "macaw" in info["description"]
        none = client.get("/api/search_text", params={"query": "spaceship"}).json()
        assert none["results"] == [] and "nothing in this index looks like" in none["warnings"][-1]


def test_multilingual_clip_without_its_tokenizer_says_what_to_download():
    from clip_embedder.models.clip import ClipEmbedder

    with pytest.raises(RuntimeError, match=r"xlm-roberta-base.*ALLOW_DOWNLOADS=1"):
        ClipEmbedder("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k").load()




