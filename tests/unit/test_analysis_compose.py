"""The analysis logic that needs no model: the description sentence, the verdict, boxes (clipping, the four-corner
form), tasks, answers' validation, prompts, BlazeFace's anchors and weighted NMS."""
from __future__ import annotations

import numpy as np
import pytest

from clip_embedder.analysis.compose import Findings, counted, describe, plural, verdict
from clip_embedder.analysis.faces import FACE_MODELS, Face, ssd_anchors, weighted_nms
from clip_embedder.analysis.nudity import NudityRegion, NudityResult
from clip_embedder.analysis.personal_data import PersonalDataFinding
from clip_embedder.analysis.providers.base import Prompts, parse_answer
from clip_embedder.analysis.records import clip_box, iou, parse_tasks
from clip_embedder.models.detector import Detection
from clip_embedder.models.ocr import OcrLine
from clip_embedder.models.tagger import Tag


def det(label: str, box=(0, 0, 10, 10), score=0.9) -> Detection:
    return Detection(label, 0, score, box)


def test_plurals_and_counts():
    assert [plural(w) for w in ("person", "bus", "wine glass", "knife", "teddy bear", "skis", "toothbrush", "puppy",
                                "toy")] == ["people", "buses", "wine glasses", "knives", "teddy bears", "skis",
                                            "toothbrushes", "puppies", "toys"]
    assert [counted("apple", 1), counted("dog", 1), counted("person", 2), counted("car", 12)] == [
        "an apple", "a dog", "two people", "12 cars"]


def test_description_is_a_sentence_from_objects_tags_faces_and_text():
    f = Findings(640, 480, detections=[det("person"), det("person", (20, 0, 30, 10)), det("dog", (40, 0, 50, 10))],
                 tags=[Tag("seashore", 0.6), Tag("dog", 0.3)], faces=[Face((1, 1, 50, 50), 0.9, ())],
                 lines=[OcrLine("EXIT", 0.9, (0, 0, 5, 5))])
    assert describe(f) == "Two people and a dog; it looks like a seashore; one face is visible; the text reads 'EXIT'."
    assert describe(Findings(10, 10, tags=[Tag("daisy", 0.5)])) == "A photo of a daisy."
    assert describe(Findings(10, 10, detections=[det("hot dog")], tags=[Tag("hotdog", 0.9)])) == "A hot dog."
    assert describe(Findings(10, 10)) == "A photo with nothing recognised."
    long = Findings(10, 10, lines=[OcrLine("word " * 40, 0.9, (0, 0, 1, 1))])
    assert describe(long).startswith("A photo with text; the text reads 'word word")
    assert describe(long).endswith("…'.") and len(describe(long)) < 120


def test_verdict_reasons_and_floors():
    small_face, big_face = Face((0, 0, 20, 20), 0.95, ()), Face((100, 100, 180, 190), 0.8, ())
    card = PersonalDataFinding("CREDIT_CARD", "4111 1111 1111 1111", 1.0, (10, 20, 300, 60))
    v = verdict(Findings(640, 480, faces=[small_face, big_face], personal_data=[card]))
    assert v.verdict is True and v.score == 1.0
    assert [(r.category, r.bbox_xyxy) for r in v.reasons] == [("personal_data", (10, 20, 300, 60)),
                                                              ("face", (100, 100, 180, 190))]
    assert "card number" in v.reasons[0].evidence and "1111 1111" not in v.reasons[0].evidence  # masked
    assert verdict(Findings(640, 480, faces=[small_face])).verdict is False  # not identifiable at 20 px
    under = NudityResult(0.37, [], 0.8)
    assert verdict(Findings(640, 480, nudity=under)).verdict is False
    over = NudityResult(0.91, [NudityRegion("FEMALE_BREAST_EXPOSED", 0.85, (5, 5, 50, 50))], 0.8)
    v = verdict(Findings(640, 480, nudity=over))
    assert v.verdict is True and [r.category for r in v.reasons] == ["nudity", "nudity"]
    assert v.reasons[1].bbox_xyxy == (5, 5, 50, 50)
    assert verdict(Findings(640, 480)).model_dump() == {"verdict": False, "score": 0.0, "reasons": []}


def test_boxes_are_clipped_and_the_four_corner_form_is_read():
    assert clip_box([-5, 10, 700, 20], 640, 480) == (0, 10, 640, 20)
    assert clip_box([300, 200, 100, 50], 640, 480) == (100, 50, 300, 200)  # corners in any order
    assert clip_box([700, 10, 900, 20], 640, 480) is None
    corners = {"TopLeft": {"x": 0.1, "y": 0.2}, "TopRight": {"x": 0.5, "y": 0.2},
               "BottomRight": {"x": 0.5, "y": 0.6}, "BottomLeft": {"x": 0.1, "y": 0.6}}  # fractions of the image
    assert clip_box(corners, 640, 480) == (64, 96, 320, 288)
    with pytest.raises(ValueError, match="four-corner"):
        clip_box({"TopLeft": {"x": 1}}, 640, 480)
    with pytest.raises(ValueError):
        clip_box([1, 2, 3], 640, 480)
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_tasks():
    assert parse_tasks(None) == ["describe", "sensitive", "labels"]
    assert parse_tasks("labels, describe") == ["describe", "labels"]
    with pytest.raises(ValueError, match="unknown analysis task"):
        parse_tasks("describe,colour")


def test_answers_are_validated():
    assert parse_answer("describe", 'Here you go:\n```json\n{"description": "x"}\n```').description == "x"
    assert parse_answer("sensitive", '{"verdict": "NO", "reasons": []}').verdict == "NO"
    with pytest.raises(ValueError, match="not JSON"):
        parse_answer("describe", "{'description': 'x'}")
    with pytest.raises(ValueError, match="verdict"):
        parse_answer("sensitive", '{"verdict": "MAYBE"}')


def test_prompts_can_be_overridden_per_task(tmp_path):
    (tmp_path / "describe.txt").write_text("Say what you see in {width}x{height}.")
    p = Prompts.load(tmp_path)
    assert p.for_task("describe", 640, 480, "in French") == ("Say what you see in 640x480.\n\nAdditional request "
                                                            "from the user: in French")
    assert "sensitive information" in p.sensitive  # the built-in one where no file overrides it
    with pytest.raises(FileNotFoundError, match="ANALYSIS_PROMPTS_DIR"):
        Prompts.load(tmp_path / "missing")


def test_blazeface_anchors_match_mediapipe_counts_and_nms_merges():
    assert ssd_anchors(FACE_MODELS["short"]).shape == (896, 2)
    full = ssd_anchors(FACE_MODELS["full"])
    assert full.shape == (2304, 2) and np.allclose(full[0], [0.5 / 48, 0.5 / 48])
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    out = weighted_nms(boxes, kps, np.array([0.9, 0.6, 0.7]))
    assert len(out) == 2 and out[0][2] == 0.9 and np.allclose(out[0][0], [0.4, 0.4, 10.4, 10.4])


def test_ocr_lines_on_one_row_are_read_together():
    from clip_embedder.models.ocr import line_rows

    a, b = OcrLine("4111 1111", 0.9, (10, 20, 200, 60)), OcrLine("1111 1111", 0.9, (210, 22, 400, 62))
    c = OcrLine("EXIT", 0.9, (10, 100, 80, 130))
    assert line_rows([c, b, a]) == [[2, 1], [0]]


def test_labels_glued_to_numbers_by_ocr_are_unglued_but_ibans_are_not():
    from clip_embedder.analysis.personal_data import unglue

    assert unglue("Tel010-1234-5678") == "Tel 010-1234-5678"
    assert unglue("IBANDE89370400440532013000") == "IBAN DE89370400440532013000"
    assert unglue("IBANNL91ABNA0417 164300") == "IBAN NL91ABNA0417 164300"  # not "ABNA 0417"
    assert unglue("전화010-1234-5678") == "전화 010-1234-5678" and unglue("个10.0.0.254") == "个 10.0.0.254"
    assert unglue("NL91ABNA0417164300") == "NL91ABNA0417164300" and unglue("ID 900101") == "ID 900101"


def test_dates_are_not_phone_numbers():
    from clip_embedder.analysis.personal_data import looks_like_date

    assert looks_like_date("03.22.2010 13") and looks_like_date("2024-03-05") and looks_like_date("5/3/24")
    assert not any(looks_like_date(t) for t in ("010-1234-5678", "02-312-3456", "+82 10-9876-5432", "(212) 555-0199"))


def test_an_object_inside_a_surer_one_of_its_kind_is_not_counted():
    person, medal = det("person", (0, 0, 500, 600), 0.55), det("person", (220, 540, 250, 570), 0.42)
    other = det("person", (480, 0, 700, 600), 0.5)  # beside, not inside
    f = Findings(800, 600, detections=[medal, person, other, det("tie", (220, 300, 260, 400), 0.6)])
    assert describe(f) == "Two people and a tie."
