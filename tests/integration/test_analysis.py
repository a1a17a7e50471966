"""Analysis with the real local models on real photos (BlazeFace, open_nsfw + NudeNet, RapidOCR + Presidio, the
detector and the ImageNet tagger), and `POST /api/analyze` end to end, locally and through a hosted provider's
stand-in on 127.0.0.1."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from clip_embedder.analysis.personal_data import KINDS
from tests.helpers import FONTS, IMAGES, PHOTOS, SHARED, render_sign

FACES_DIR = SHARED / "models" / "faces"
#: Grace Hopper's face in grace_hopper.jpg, annotated by hand: ear to ear, hat brim to chin (xyxy px)
GRACE_FACE = (165, 130, 360, 335)
#: rendered findings: text on the sign → the Presidio entity it must be found as
PERSONAL = {"4111 1111 1111 1111": "CREDIT_CARD", "jane.doe@example.com": "EMAIL_ADDRESS",
            "Tel 010-1234-5678": "PHONE_NUMBER", "ID 900101-1234568": "KR_RRN"}


@pytest.fixture(scope="module")
def local_settings(settings):
    return settings.model_copy(update={"ocr": "rapidocr"})


@pytest.fixture(scope="module")
def analyser(local_settings, detector):
    from clip_embedder.analysis.local import LocalAnalyser

    return LocalAnalyser.from_settings(local_settings, detector=detector).load()


@pytest.fixture(scope="module")
def signs(tmp_path_factory) -> dict[str, Path]:
    """Each personal finding rendered on a white band onto a COCO128 photo."""
    out = tmp_path_factory.mktemp("personal")
    paths = {}
    photos = [p for p in sorted(IMAGES.glob("*.jpg")) if Image.open(p).width >= 640]  # room for the longest line
    for i, (text, _) in enumerate(PERSONAL.items()):
        paths[text] = out / f"sign_{i}.jpg"
        render_sign(photos[10 + i], text, paths[text], FONTS["en"])
    return paths


def rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


@pytest.mark.parametrize("variant", ["full", "short"])
def test_faces_grace_hopper_has_one_on_her_face_sunflower_none(variant):
    from clip_embedder.analysis.faces import BlazeFaceDetector
    from clip_embedder.analysis.records import iou

    faces = BlazeFaceDetector(variant, FACES_DIR).detect(rgb(PHOTOS / "grace_hopper.jpg"))
    assert len(faces) == 1, faces
    assert iou(faces[0].bbox, GRACE_FACE) >= 0.5, faces[0].bbox
    nose = faces[0].keypoints[2]
    assert GRACE_FACE[0] < nose[0] < GRACE_FACE[2] and GRACE_FACE[1] < nose[1] < GRACE_FACE[3]
    assert BlazeFaceDetector(variant, FACES_DIR).detect(rgb(PHOTOS / "sunflower.jpg")) == []


def test_personal_data_read_in_photos_is_found_with_its_line_box(analyser, signs):
    for text, kind in PERSONAL.items():
        a = analyser.analyse(rgb(signs[text]), ["sensitive", "labels"])
        assert a.sensitive is not None and a.sensitive.verdict is True, (text, [t.text for t in a.text])
        reasons = [r for r in a.sensitive.reasons if r.category == "personal_data" and KINDS[kind] in r.evidence]
        assert reasons, (text, a.sensitive.reasons)
        box = reasons[0].bbox_xyxy
        assert box is not None and box[1] < 100 and box[0] < 120, box  # the band is drawn at the top-left
        assert any(lb.source == "text" for lb in a.labels)
        found = analyser.models.personal_data.find_in_text(text)
        assert [k for k, _, _ in found][:1] == [kind], found


def test_nudity_scores_of_137_safe_photos_stay_under_the_floors(analyser):
    nudity = analyser.models.nudity
    worst = (0.0, 0.0)
    for path in sorted(IMAGES.glob("*.jpg")) + sorted(PHOTOS.glob("*.jpg")):
        image = rgb(path)
        score, regions = nudity.score(image), nudity.all_regions(image)
        worst = (max(worst[0], score), max([worst[1], *(r.score for r in regions)]))
        assert score < nudity.floor and all(r.score < nudity.region_floor for r in regions), (path.name, score,
                                                                                              regions)
    assert worst[0] > 0.05 and worst[1] > 0.3  # the models ran: safe photos do score a little
    print(f"\nhighest open_nsfw {worst[0]:.3f} (floor {nudity.floor}), NudeNet exposed {worst[1]:.3f} "
          f"(floor {nudity.region_floor})")


@pytest.fixture(scope="module")
def analyze_client(local_settings, indexed):
    from fastapi.testclient import TestClient

    from api.main import create_app

    with TestClient(create_app(local_settings)) as c:
        yield c


def post(client, path: Path, **kw):
    return client.post("/api/analyze", files={"file": (path.name, path.read_bytes(), "image/jpeg")}, **kw)


def test_analyze_route_grace_card_sunflower(analyze_client, signs):
    r = post(analyze_client, PHOTOS / "grace_hopper.jpg")
    assert r.status_code == 200, r.text
    a = r.json()
    assert a["provider"] == "local" and a["image"] == {"width": 512, "height": 600}
    assert "people" in a["description"] or "person" in a["description"], a["description"]
    assert a["sensitive"]["verdict"] is True
    face = [x for x in a["sensitive"]["reasons"] if x["category"] == "face"]
    assert len(face) == 1 and face[0]["bbox_xyxy"][0] < GRACE_FACE[0] + 40
    assert {"detector", "tagger", "face"} <= {lb["source"] for lb in a["labels"]}

    card = post(analyze_client, signs["4111 1111 1111 1111"]).json()
    assert card["sensitive"]["verdict"] is True
    assert any(x["category"] == "personal_data" and "card number" in x["evidence"]
               for x in card["sensitive"]["reasons"])
    assert "4111 1111 1111 1111" not in json.dumps(card["sensitive"])  # masked in the evidence

    sun = post(analyze_client, PHOTOS / "sunflower.jpg", params={"tasks": "sensitive,describe"}).json()
    assert sun["sensitive"] == {"verdict": False, "score": 0.0, "reasons": []} and sun["labels"] == []
    assert sun["tasks"] == ["describe", "sensitive"] and sun["description"].startswith("A photo of a daisy")


def test_analyze_route_refuses_bad_input(analyze_client):
    assert post(analyze_client, PHOTOS / "owl.jpg", params={"tasks": "colour"}).status_code == 422
    r = analyze_client.post("/api/analyze", files={"file": ("a.txt", b"hello", "text/plain")})
    assert r.status_code == 415 and "not an image" in r.json()["detail"]
    r = analyze_client.post("/api/analyze", files={"file": ("a.jpg", b"\xff\xd8\xff\xe0 truncated", "image/jpeg")})
    assert r.status_code in (400, 422) and r.json()["detail"]
    assert "/api/analyze" in analyze_client.get("/openapi.json").json()["paths"]


def test_hosted_provider_through_the_route_needs_the_key(settings, indexed):
    """ANALYSIS_PROVIDER=openai pointed at a stand-in on 127.0.0.1: no key → 401; with the key → the provider's
    answer; an answer that is not JSON twice → 502 with a message."""
    from fastapi.testclient import TestClient

    from api.main import create_app
    from tests.unit.test_analysis_providers import FakeOpenAi, completion

    fake = FakeOpenAi()
    hosted = settings.model_copy(update={"analysis_provider": "openai", "analysis_base_url": fake.url,
                                         "analysis_model": "llava", "analysis_max_retries": 0})
    try:
        with TestClient(create_app(hosted)) as c:
            assert post(c, PHOTOS / "parrot.jpg").status_code == 401
            fake.then(200, completion('{"description": "A red and blue parrot on a branch."}'))
            r = post(c, PHOTOS / "parrot.jpg", params={"tasks": "describe"}, headers={"X-API-Key": "test-key"},
                     data={"prompt": "name the colours"})
            assert r.status_code == 200, r.text
            assert r.json()["description"] == "A red and blue parrot on a branch."
            assert r.json()["usage"]["calls"] == 1 and r.json()["model"] == "llava"
            assert "name the colours" in fake.requests[-1][3]["messages"][0]["content"][0]["text"]
            fake.then(200, completion("no")).then(200, completion("still no"))
            r = post(c, PHOTOS / "parrot.jpg", params={"tasks": "describe"}, headers={"X-API-Key": "test-key"})
            assert r.status_code == 502 and "invalid JSON" in r.json()["detail"]
    finally:
        fake.server.shutdown()


def test_the_cli_analyses_what_it_indexed_once(tmp_path, monkeypatch, capsys):
    """`embed_and_index --analyze`: each indexed image analysed and stored (the run's OCR lines reused); a second run
    analyses nothing again (same analyser signature)."""
    from clip_embedder.config import Settings
    from clip_embedder.db.store import Store
    from clip_embedder.scripts import embed_and_index
    from tests.helpers import IMAGENET_LABELS, MOBILENET, TAGGER_HEAD, YOLO_WEIGHTS

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("grace_hopper.jpg", "sunflower.jpg"):
        (folder / name).write_bytes((PHOTOS / name).read_bytes())
    env = {"PGDATA_DIR": tmp_path / "pg", "FAISS_DIR": tmp_path / "faiss", "DETECTOR_WEIGHTS": YOLO_WEIGHTS,
           "MOBILENET_WEIGHTS": MOBILENET, "SPACES": "mobilenet,text", "DATABASE_URL": "",
           "TAGGER_WEIGHTS": TAGGER_HEAD, "TAGGER_LABELS": IMAGENET_LABELS, "OCR": "rapidocr",
           "FACE_WEIGHTS_DIR": FACES_DIR, "STORAGE_ROOT": tmp_path / "originals"}
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    monkeypatch.chdir(tmp_path)
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--analyze"]) == 0
    assert "analysed 2 image(s) with local:" in capsys.readouterr().out
    store = Store.open(Settings(_env_file=None))
    try:
        with store.conn() as c:
            rows = {r["file_name"]: r for r in c.execute(
                "SELECT i.file_name, a.sensitive, a.faces, a.analysis FROM analyses a "
                "JOIN images i ON i.id = a.image_id").fetchall()}
    finally:
        store.close()
    assert rows["grace_hopper.jpg"]["sensitive"] is True and rows["grace_hopper.jpg"]["faces"] == 1
    assert rows["sunflower.jpg"]["sensitive"] is False
    assert "ocr" not in rows["grace_hopper.jpg"]["analysis"]["timings_ms"]  # the run's own reading was reused
    assert embed_and_index.main(["--dataset_path", str(folder), "--no-progress", "--analyze"]) == 0
    assert "analysed 0 image(s)" in capsys.readouterr().out
