"""The local analyser (`ANALYSIS_PROVIDER=local`, the offline default): the detector, the ImageNet tagger, BlazeFace,
OCR, Presidio and the nudity models, each run only when a requested task needs it, then composed into one `Analysis`.

| task        | analysers it runs                                  |
|-------------|----------------------------------------------------|
| `describe`  | detector, tagger, faces, OCR                       |
| `sensitive` | faces, OCR + personal data, nudity                 |
| `labels`    | detector, tagger, faces, nudity regions, OCR + personal data |
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from PIL import Image

from clip_embedder.analysis.compose import IDENTIFIABLE_FACE_PX, Findings, describe, verdict
from clip_embedder.analysis.faces import BlazeFaceDetector
from clip_embedder.analysis.nudity import NudityScorer
from clip_embedder.analysis.personal_data import PresidioRecognizer
from clip_embedder.analysis.records import Analysis, ImageSize, Label, TextLine, clip_box
from clip_embedder.models.detector import Detector
from clip_embedder.models.mobilenet import MobileNetEmbedder
from clip_embedder.models.ocr import OcrEngine, OcrLine
from clip_embedder.models.tagger import ImageNetTagger

NEEDS = {"describe": {"detector", "tagger", "faces", "ocr"},
         "sensitive": {"faces", "ocr", "personal_data", "nudity"},
         "labels": {"detector", "tagger", "faces", "nudity", "ocr", "personal_data"}}


@dataclass
class LocalModels:
    """The models the local analyser uses; None = off (its findings stay empty)."""

    detector: Detector | None = None
    tagger: ImageNetTagger | None = None
    extractor: MobileNetEmbedder | None = None  # the MobileNet features the tagger reads
    ocr: OcrEngine | None = None
    faces: BlazeFaceDetector | None = None
    nudity: NudityScorer | None = None
    personal_data: PresidioRecognizer | None = None


class LocalAnalyser:
    """Analyses an image with the local models; thread-safe (each model serialises its own runs)."""

    provider = "local"

    def __init__(self, models: LocalModels, *, face_min_side: float = IDENTIFIABLE_FACE_PX):
        self.models, self.face_min_side = models, face_min_side

    @classmethod
    def from_settings(cls, settings: Any, *, detector: Detector | None = None,
                      extractor: MobileNetEmbedder | None = None) -> LocalAnalyser:
        """The analyser the settings describe (FACES, NUDITY, PERSONAL_DATA, TAGGER, OCR), reusing the service's
        `detector` and MobileNet `extractor` when given (built from the settings otherwise). Models load on first
        use."""
        from clip_embedder.models.ocr import create_ocr  # noqa: PLC0415
        from clip_embedder.models.registry import FACE_DETECTORS, NUDITY_MODELS, PERSONAL_DATA  # noqa: PLC0415
        from clip_embedder.models.tagger import create_tagger  # noqa: PLC0415

        tagger = create_tagger(settings)
        if tagger is not None and extractor is None:
            extractor = MobileNetEmbedder.from_settings(settings)
        if detector is None:
            from clip_embedder.models.detector import load_detector  # noqa: PLC0415
            detector = load_detector(settings)
        return cls(LocalModels(detector=detector, tagger=tagger, extractor=extractor, ocr=create_ocr(settings),
                               faces=FACE_DETECTORS.create(settings.faces, settings),
                               nudity=NUDITY_MODELS.create(settings.nudity, settings),
                               personal_data=PERSONAL_DATA.create(settings.personal_data, settings)),
                   face_min_side=settings.face_identifiable_px)

    @property
    def model(self) -> str:
        """The models in use, e.g. "yolov5(coco-7)+imagenet+blazeface-full:0.6+rapidocr+presidio+opennsfw:0.8"."""
        m = self.models
        parts = [f"yolov5[{len(m.detector.names)} classes]" if m.detector else None,
                 "imagenet-mobilenet-v1" if m.tagger else None, m.faces.signature if m.faces else None,
                 m.ocr.signature if m.ocr else None, "presidio" if m.personal_data else None,
                 m.nudity.signature if m.nudity else None]
        return "+".join(p for p in parts if p)

    def load(self) -> LocalAnalyser:
        """Load every model now (a missing file fails here, with its message, not on the first photo)."""
        for model in (self.models.tagger, self.models.extractor, self.models.ocr, self.models.faces,
                      self.models.nudity, self.models.personal_data):
            if model is not None:
                model.load()
        return self

    @property
    def signature(self) -> str:
        """What a stored analysis depends on: the provider and its models with their floors (a change re-runs it)."""
        return f"local:{self.model}:faces>={self.face_min_side:g}px"

    def findings(self, image: Image.Image, needs: set[str], timings: dict[str, float],
                 lines: list[OcrLine] | None = None) -> Findings:
        """Run each analyser in `needs` (names of `NEEDS`' values) that is on; `timings` gets ms per analyser.
        `lines`: the text already read in the image (the enrichment job's OCR), so OCR does not run again."""
        m, f = self.models, Findings(image.width, image.height)
        if lines is not None:
            f.lines = list(lines)
            needs = needs - {"ocr"}

        @contextmanager
        def timed(name: str):
            t = time.perf_counter()
            yield
            timings[name] = round((time.perf_counter() - t) * 1000, 1)

        def run(name: str, model: object, step: Callable[[], None]) -> None:
            if name in needs and model is not None:
                with timed(name):
                    step()

        def tags() -> None:
            assert m.tagger is not None and m.extractor is not None
            f.tags = m.tagger.tag(m.extractor.features([image]))[0]

        def personal() -> None:
            assert m.personal_data is not None
            f.personal_data = m.personal_data.find(f.lines)

        run("detector", m.detector, lambda: setattr(f, "detections", m.detector.detect([image])[0]))  # type: ignore
        run("tagger", m.tagger and m.extractor, tags)
        run("faces", m.faces, lambda: setattr(f, "faces", m.faces.detect(image)))  # type: ignore[union-attr]
        run("ocr", m.ocr, lambda: setattr(f, "lines", m.ocr.read(image)))  # type: ignore[union-attr]
        run("personal_data", m.personal_data, personal)
        run("nudity", m.nudity, lambda: setattr(f, "nudity", m.nudity.analyse(image)))  # type: ignore[union-attr]
        return f

    def analyse(self, image: Image.Image, tasks: list[str], prompt: str | None = None, *,
                lines: list[OcrLine] | None = None) -> Analysis:
        """The analysis of an RGB image for `tasks` (a subset of describe, sensitive, labels); boxes in its pixels.
        `prompt` is for hosted providers (ignored here); `lines`: text already read in the image (OCR skipped).

        Raises:
            FileNotFoundError / RuntimeError: a model's file or package is missing (on first use).
        """
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        needs = set().union(*(NEEDS[t] for t in tasks))
        f = self.findings(image, needs, timings, lines)
        w, h = image.size
        return Analysis(image=ImageSize(width=w, height=h), provider=self.provider, model=self.model, tasks=tasks,
                        description=describe(f) if "describe" in tasks else "",
                        sensitive=verdict(f, face_min_side=self.face_min_side) if "sensitive" in tasks else None,
                        labels=labels(f) if "labels" in tasks else [],
                        text=[TextLine(text=ln.text, confidence=min(1.0, ln.confidence),
                                       bbox_xyxy=clip_box(ln.bbox, w, h)) for ln in f.lines],
                        timings_ms=timings, elapsed_ms=round((time.perf_counter() - t0) * 1000, 1))


def labels(f: Findings) -> list[Label]:
    """Every finding with a box: detected objects, whole-image ImageNet tags (the whole image's box), faces, exposed
    regions, personal data (its line's box); best first within each source."""
    whole = (0.0, 0.0, float(f.width), float(f.height))
    out: list[Label] = []

    def add(label: str, score: float, box: Any, source: str) -> None:
        clipped = clip_box(box, f.width, f.height)
        if clipped is not None:
            out.append(Label(label=label, score=round(min(1.0, max(0.0, score)), 4), bbox_xyxy=clipped,
                             source=source))  # type: ignore[arg-type]

    for d in sorted(f.detections, key=lambda d: -d.score):
        add(d.label, d.score, d.bbox, "detector")
    for t in f.tags:
        add(t.label, t.score, whole, "tagger")
    for face in f.faces:
        add("face", face.score, face.bbox, "face")
    if f.nudity is not None:
        for r in f.nudity.regions:
            add(r.label.lower().replace("_", " "), r.score, r.bbox, "nudity")
    for p in f.personal_data:
        add(p.describe, p.score, p.bbox, "text")
    return out
