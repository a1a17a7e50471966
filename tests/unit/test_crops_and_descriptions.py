"""The crop policy and the descriptions items are embedded and shown by."""
from __future__ import annotations

from PIL import Image

from clip_embedder.indexing.crops import CropPolicy
from clip_embedder.indexing.describe import describe_detections, describe_image, describe_object


def test_crop_policy():
    p = CropPolicy(padding=0.1, min_side=24, max_aspect=4.0)
    assert p.crop_box((100, 100, 200, 150), 640, 480) == (90, 95, 210, 155)
    assert p.crop_box((0, 0, 100, 100), 640, 480) == (0, 0, 110, 110)  # clipped at the border
    assert p.crop_box((10, 10, 25, 30), 640, 480) is None  # too small
    assert p.crop_box((0, 0, 600, 60), 640, 480) is None  # aspect 600/60 > 4
    im = Image.new("RGB", (640, 480))
    assert p.crop(im, (100, 100, 200, 150)).size == (120, 60)


def test_describe_detections():
    assert describe_detections(["person", "car", "person"]) == "a photo of 2 persons and a car"
    assert describe_detections([]) == "a photo with no detected objects"


def test_describe_object_does_not_repeat_the_label_among_its_tags():
    assert describe_object("dog", ["Labrador retriever", "dog", "Labrador retriever"]) == \
        "a photo of a dog (Labrador retriever)"
    assert describe_object("apple") == "a photo of an apple"


def test_describe_image_carries_objects_tags_and_text():
    assert describe_image(["person", "person", "dog"], ["Labrador retriever"], "EXIT\n  here") == \
        "a photo of 2 persons and a dog (Labrador retriever); text: 'EXIT here'"
    assert describe_image([], ["zebra"]) == "a photo of a zebra"
    assert describe_image([], [], "x" * 500).endswith("'" + "x" * 200 + "'")  # DESCRIPTION_TEXT_CHARS
