"""YOLOv5 detection with the real pretrained yolov5n weights, and the crop policy."""
from __future__ import annotations

import logging

import pytest
from PIL import Image

from clip_embedder.crops import CropPolicy
from clip_embedder.detector import Detector

from conftest import IMAGES, YOLO_STATE_DICT, YOLO_WEIGHTS


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_known_image_bowl_and_broccoli(detector):
    # 000000000009.jpg is annotated with bowls and broccoli (COCO 2017); check label and box location
    dets = detector.detect([Image.open(IMAGES / "000000000009.jpg")])[0]
    labels = {d.label for d in dets}
    assert {"bowl", "broccoli"} <= labels
    bowl = next(d for d in dets if d.label == "bowl")
    gt_bowl = (1.08, 187.69, 1.08 + 611.59, 187.69 + 285.84)  # its largest annotated bowl, xyxy pixels
    gt_bowl_top = (311.73, 4.31, 311.73 + 319.28, 4.31 + 228.68)
    assert max(iou(bowl.bbox, gt_bowl), iou(bowl.bbox, gt_bowl_top)) > 0.5
    assert all(0 <= d.bbox[0] < d.bbox[2] <= 640 and 0 <= d.bbox[1] < d.bbox[3] <= 480 for d in dets)
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)


def test_batch_equals_single_and_both_formats(detector):
    ims = [Image.open(IMAGES / n) for n in ("000000000009.jpg", "000000000025.jpg", "000000000030.jpg")]
    batch = detector.detect(ims)
    assert [detector.detect([im])[0] for im in ims] == batch
    safe = Detector.load(YOLO_STATE_DICT, conf=detector.conf)  # weights_only=True format, same weights
    assert [[d.label for d in r] for r in safe.detect(ims)] == [[d.label for d in r] for r in batch]
    assert len(detector.names) == 80 and detector.names[0] == "person"


def test_missing_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="DETECTOR_WEIGHTS"):
        Detector.load(tmp_path / "nope.pt")


def test_gpu_request_falls_back_to_cpu_with_one_warning(caplog):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with caplog.at_level(logging.WARNING):
        d = Detector.load(YOLO_WEIGHTS, device="0")
        Detector.load(YOLO_WEIGHTS, device="0")
    assert d.device.type == "cpu"
    assert sum("no CUDA GPU" in r.message for r in caplog.records) <= 1


def test_crop_policy():
    p = CropPolicy(padding=0.1, min_side=24, max_aspect=4.0)
    assert p.crop_box((100, 100, 200, 150), 640, 480) == (90, 95, 210, 155)
    assert p.crop_box((0, 0, 100, 100), 640, 480) == (0, 0, 110, 110)  # clipped at the border
    assert p.crop_box((10, 10, 25, 30), 640, 480) is None  # too small
    assert p.crop_box((0, 0, 600, 60), 640, 480) is None  # aspect 600/60 > 4
    im = Image.new("RGB", (640, 480))
    assert p.crop(im, (100, 100, 200, 150)).size == (120, 60)


def _matched(ref, got, conf: float) -> bool:
    """Every detection of `ref` has one in `got` with the same label, a box within 1 px and a score within
    0.01 (and the other way round); an unmatched one may only be a score at the confidence threshold."""
    free = list(got)
    for d in ref:
        m = next((g for g in free if g.label == d.label and abs(g.score - d.score) <= 0.01
                  and max(abs(a - b) for a, b in zip(g.bbox, d.bbox)) <= 1.0), None)
        if m is None:
            if d.score > conf + 0.01:
                return False
            continue
        free.remove(m)
    return all(g.score <= conf + 0.01 for g in free)


@pytest.mark.parametrize("runtime", ["onnx", "openvino"])
def test_exported_runtimes_agree_with_torch(runtime, tmp_path):
    """The weights exported to ONNX once (cached by sha256) and run by ONNX Runtime / OpenVINO detect what torch
    detects on COCO128 images of both orientations: same labels, boxes within 1 px, scores within 0.01."""
    ims = [Image.open(p).convert("RGB") for p in sorted(IMAGES.glob("*.jpg"))[:16]]
    assert len({im.size for im in ims}) > 1  # several letterboxed shapes in one call
    ref = Detector.load(YOLO_WEIGHTS, conf=0.15, runtime="torch").detect(ims)
    det = Detector.load(YOLO_WEIGHTS, conf=0.15, runtime=runtime, export_dir=tmp_path)
    assert det.runtime == runtime and len(list(tmp_path.glob("yolov5_*.onnx"))) == 1
    got = det.detect(ims)
    assert sum(map(len, ref)) > 50
    assert all(_matched(r, g, 0.15) for r, g in zip(ref, got))
    # the export is reused (same file, not rewritten), and a batch equals images one at a time
    mtime = next(tmp_path.glob("yolov5_*.onnx")).stat().st_mtime_ns
    again = Detector.load(YOLO_WEIGHTS, conf=0.15, runtime=runtime, export_dir=tmp_path)
    assert next(tmp_path.glob("yolov5_*.onnx")).stat().st_mtime_ns == mtime
    assert [again.detect([im])[0] for im in ims[:4]] == got[:4]


def test_auto_runtime_is_onnx_on_the_cpu(tmp_path):
    assert Detector.load(YOLO_WEIGHTS, runtime="auto", export_dir=tmp_path).runtime == "onnx"
    with pytest.raises(ValueError, match="unknown DETECTOR_RUNTIME"):
        Detector.load(YOLO_WEIGHTS, runtime="tensorrt")
