"""One registry per kind of model: a table from name to builder, from which the settings are validated and the lists
of names are derived (the way OpenCLIP's factory lists its model configs).

| registry           | setting            | names                                                        |
|--------------------|--------------------|--------------------------------------------------------------|
| `EMBEDDING_SPACES` | `SPACES`           | clip, mobilenet, text                                        |
| `OCR_ENGINES`      | `OCR`              | rapidocr, tesseract, off                                     |
| `TAGGERS`          | `TAGGER`           | imagenet, off                                                |

A builder is named as "module:attribute" and imported on first use, so this module (and the settings that
validate against it) import no model library. A builder takes the `Settings` and returns the model, not loaded yet
(models load lazily, `LazyModel.load`); an entry without a builder stands for "off" and builds None.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    """A registered model: its `name` (the setting's value), its `builder` ("module:attribute", None for "off") and a
    one-line `summary` for help texts."""

    name: str
    builder: str | None
    summary: str

    def build(self, settings: Any) -> Any:
        """The model configured from `settings` (None for an "off" entry).

        Raises:
            ImportError / AttributeError: the builder does not exist (a registry typo).
        """
        if self.builder is None:
            return None
        module, attr = self.builder.split(":")
        target: Any = import_module(module)
        for part in attr.split("."):
            target = getattr(target, part)
        return target(settings)


class ModelRegistry:
    """The models of one kind, by name, in the order they were registered."""

    def __init__(self, kind: str, entries: list[ModelEntry]):
        self.kind = kind
        self._entries = {e.name: e for e in entries}

    def names(self) -> tuple[str, ...]:
        """Every registered name, in registration order."""
        return tuple(self._entries)

    def get(self, name: str) -> ModelEntry:
        """The entry called `name`.

        Raises:
            ValueError: an unknown name (the message lists the known ones).
        """
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; known: {', '.join(self._entries)}") from None

    def create(self, name: str, settings: Any) -> Any:
        """The model called `name`, configured from `settings` (None for an "off" entry).

        Raises:
            ValueError: an unknown name.
        """
        return self.get(name).build(settings)


EMBEDDING_SPACES = ModelRegistry("embedding space", [
    ModelEntry("clip", "clip_embedder.models.clip:ClipEmbedder.from_settings",
               "OpenCLIP: image and text towers in one space (text queries)"),
    ModelEntry("mobilenet", "clip_embedder.models.mobilenet:MobileNetEmbedder.from_settings",
               "ImageNet MobileNet-v1 embedder (image queries only)"),
    ModelEntry("text", "clip_embedder.models.text:TextEmbedder.from_settings",
               "all-MiniLM-L6-v2 over each item's description (text queries)"),
])

OCR_ENGINES = ModelRegistry("OCR engine", [
    ModelEntry("rapidocr", "clip_embedder.models.ocr:RapidOcrEngine.from_settings",
               "RapidOCR (PP-OCRv4, English/Chinese, models inside the wheel)"),
    ModelEntry("tesseract", "clip_embedder.models.ocr:TesseractEngine.from_settings",
               "Tesseract with OCR_LANGS (Debian tesseract-ocr-<lang>; Korean: kor)"),
    ModelEntry("off", None, "no text is read"),
])

TAGGERS = ModelRegistry("tagger", [
    ModelEntry("imagenet", "clip_embedder.models.tagger:ImageNetTagger.from_settings",
               "ImageNet classes from MobileNet-v1's head over the mobilenet features"),
    ModelEntry("off", None, "no tags"),
])
