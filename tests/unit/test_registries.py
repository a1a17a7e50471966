"""One registry per kind of model: names, validation of the settings derived from them, builders by name."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from clip_embedder.config import KNOWN_SPACES, Settings
from clip_embedder.models.registry import EMBEDDING_SPACES, OCR_ENGINES, TAGGERS, ModelEntry, ModelRegistry


def test_names_come_from_the_registries():
    assert EMBEDDING_SPACES.names() == KNOWN_SPACES == ("clip", "mobilenet", "text")
    assert OCR_ENGINES.names() == ("rapidocr", "tesseract", "off")
    assert TAGGERS.names() == ("imagenet", "off")


def test_unknown_names_are_refused_with_the_known_ones_listed():
    with pytest.raises(ValueError, match="unknown OCR engine 'easyocr'; known: rapidocr, tesseract, off"):
        OCR_ENGINES.get("easyocr")
    with pytest.raises(ValidationError, match="unknown tagger 'clip'"):
        Settings(_env_file=None, tagger="clip")
    with pytest.raises(ValidationError, match="unknown embedding space"):
        Settings(_env_file=None, spaces="clip,siglip")


def test_off_builds_nothing_and_builders_configure_from_settings(tmp_path):
    settings = Settings(_env_file=None, ocr="tesseract", ocr_langs="eng", ocr_min_confidence=0.7,
                        tagger_weights=tmp_path / "head.tflite", tagger_labels=tmp_path / "labels.txt")
    assert OCR_ENGINES.create("off", settings) is None and TAGGERS.create("off", settings) is None
    engine = OCR_ENGINES.create("tesseract", settings)
    assert type(engine).__name__ == "TesseractEngine" and not engine.loaded  # built, not loaded: lazy
    assert engine.min_confidence == 0.7 and engine.signature.startswith("tesseract")
    tagger = TAGGERS.create("imagenet", settings)
    assert type(tagger).__name__ == "ImageNetTagger" and not tagger.loaded


def test_every_embedding_space_builds_an_embedder_of_its_space_without_loading_it():
    settings = Settings(_env_file=None)
    for name in EMBEDDING_SPACES.names():
        emb = EMBEDDING_SPACES.create(name, settings)
        assert emb.space == name and not emb.loaded


def test_a_registry_of_its_own():
    reg = ModelRegistry("thing", [ModelEntry("a", "collections:OrderedDict", "an ordered dict"),
                                  ModelEntry("b", None, "")])
    assert reg.names() == ("a", "b") and reg.get("a").summary == "an ordered dict"
    assert reg.create("b", None) is None
    assert type(reg.create("a", [("k", 1)])).__name__ == "OrderedDict"  # the builder receives the settings
