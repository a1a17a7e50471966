"""One registry per kind of model: a table from name to builder, from which the settings are validated and the lists
of names are derived (the way OpenCLIP's factory lists its model configs).

| registry           | setting            | names                                                        |
|--------------------|--------------------|--------------------------------------------------------------|
| `EMBEDDING_SPACES` | `SPACES`           | clip, mobilenet, text                                        |
| `OCR_ENGINES`      | `OCR`              | rapidocr, tesseract, off                                     |
| `TAGGERS`          | `TAGGER`           | imagenet, off                                                |
| `FACE_DETECTORS`   | `FACES`            | full, short, off                                             |
| `NUDITY_MODELS`    | `NUDITY`           | opennsfw+nudenet, opennsfw, off                              |
| `PERSONAL_DATA`    | `PERSONAL_DATA`    | presidio, off                                                |
| `ANALYSIS_PROVIDERS` | `ANALYSIS_PROVIDER` | local, openai, bedrock                                   |

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

FACE_DETECTORS = ModelRegistry("face detector", [
    ModelEntry("full", "clip_embedder.analysis.faces:BlazeFaceDetector.from_settings",
               "MediaPipe BlazeFace full range (192 px input: faces near and far)"),
    ModelEntry("short", "clip_embedder.analysis.faces:BlazeFaceDetector.from_settings",
               "MediaPipe BlazeFace short range (128 px input: faces within ~2 m)"),
    ModelEntry("off", None, "no faces"),
])

NUDITY_MODELS = ModelRegistry("nudity model", [
    ModelEntry("opennsfw+nudenet", "clip_embedder.analysis.nudity:NudityScorer.from_settings",
               "open_nsfw's image probability and NudeNet's exposed regions (boxes)"),
    ModelEntry("opennsfw", "clip_embedder.analysis.nudity:NudityScorer.from_settings",
               "open_nsfw's image probability only"),
    ModelEntry("off", None, "no nudity check"),
])

PERSONAL_DATA = ModelRegistry("personal-data recognizer", [
    ModelEntry("presidio", "clip_embedder.analysis.personal_data:PresidioRecognizer.from_settings",
               "Presidio's pattern recognizers over the text read (cards, e-mails, phones, IBAN, IP, URLs, KR ids)"),
    ModelEntry("off", None, "the text read is not checked for personal data"),
])

ANALYSIS_PROVIDERS = ModelRegistry("analysis provider", [
    ModelEntry("local", "clip_embedder.analysis.providers:build_local", "this service's own models, offline"),
    ModelEntry("openai", "clip_embedder.analysis.providers:OpenAiProvider.from_settings",
               "an OpenAI-compatible chat-completions API (OpenAI, Azure OpenAI, Ollama, vLLM, llama.cpp)"),
    ModelEntry("bedrock", "clip_embedder.analysis.providers:BedrockProvider.from_settings",
               "Anthropic Claude on Amazon Bedrock (invoke_model, messages API)"),
])
