"""YOLOv5 detection with the real pretrained yolov5n weights, and the crop policy."""
from __future__ import annotations

import logging

import pytest
from PIL import Image

from clip_embedder.models.detector import Detector
from tests.helpers import IMAGES, YOLO_STATE_DICT, YOLO_WEIGHTS


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
    assert d.device == "cpu"
    assert sum("no CUDA GPU" in r.message for r in caplog.records) <= 1




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


def test_yolo_ops_equal_yolov5s_own_functions(detector):
    """letterbox, NMS and box scaling (clip_embedder/yolo_ops.py, ported so the exported runtimes start without
    importing yolov5) give exactly what yolov5's functions give, on COCO128 images of several shapes and on the
    model's real raw predictions."""
    import numpy as np
    import torch
    from yolov5.utils.augmentations import letterbox as y_letterbox
    from yolov5.utils.general import non_max_suppression as y_nms
    from yolov5.utils.general import scale_boxes as y_scale

    from clip_embedder.models import yolo_ops

    files = sorted(IMAGES.glob("*.jpg"))[:24]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    arrays.append(np.zeros((37, 1000, 3), np.uint8))  # a strip: padding on both sides, odd sizes
    assert len({a.shape for a in arrays}) > 3
    checked = 0
    for a in arrays:
        ours = yolo_ops.letterbox(a, 640, stride=32)
        assert np.array_equal(ours, y_letterbox(a, 640, stride=32, auto=True)[0]), a.shape
        x = torch.from_numpy(ours[None]).permute(0, 3, 1, 2).float().div(255)
        with torch.inference_mode():
            pred = detector.model(x)[0]
        for conf, iou in ((0.15, 0.45), (0.5, 0.3)):
            got = yolo_ops.non_max_suppression(pred.numpy().copy(), conf, iou, max_det=100)[0]
            want = y_nms(pred.clone(), conf, iou, max_det=100)[0]
            assert np.array_equal(got, want.numpy())
            assert np.array_equal(yolo_ops.scale_boxes(x.shape[2:], got[:, :4].copy(), a.shape),
                                  y_scale(x.shape[2:], want[:, :4].clone(), a.shape).numpy())
            checked += len(got)
    assert checked > 100


def test_a_start_from_the_export_skips_the_weights_and_refuses_what_loading_refuses(tmp_path):
    """With the export and its sidecar in EXPORT_DIR, the detector runs from them without loading the weights (the
    same detections); a pickled checkpoint stays refused where pickles are (weights from a tracking server); an
    export without its sidecar (made before sidecars) is completed by one full load."""
    ims = [Image.open(p).convert("RGB") for p in sorted(IMAGES.glob("*.jpg"))[:6]]
    first = Detector.load(YOLO_STATE_DICT, conf=0.15, runtime="onnx", export_dir=tmp_path, allow_pickle=False)
    assert first.model is not None and len(list(tmp_path.glob("yolov5_*.json"))) == 1
    fast = Detector.load(YOLO_STATE_DICT, conf=0.15, runtime="onnx", export_dir=tmp_path, allow_pickle=False)
    assert fast.model is None and fast.names == first.names and fast.stride == first.stride == 32
    assert fast.detect(ims) == first.detect(ims)
    assert Detector.load(YOLO_STATE_DICT, runtime="torch", export_dir=tmp_path).model is not None
    # the release pickle: exported once where pickles are allowed, still refused where they are not
    Detector.load(YOLO_WEIGHTS, runtime="onnx", export_dir=tmp_path)
    assert Detector.load(YOLO_WEIGHTS, runtime="onnx", export_dir=tmp_path).model is None
    with pytest.raises(ValueError, match="pickled checkpoint"):
        Detector.load(YOLO_WEIGHTS, runtime="onnx", export_dir=tmp_path, allow_pickle=False)
    for sidecar in tmp_path.glob("yolov5_*.json"):
        sidecar.unlink()
    again = Detector.load(YOLO_STATE_DICT, conf=0.15, runtime="onnx", export_dir=tmp_path)
    assert again.model is not None and len(list(tmp_path.glob("yolov5_*.json"))) == 1
    assert Detector.load(YOLO_STATE_DICT, conf=0.15, runtime="onnx", export_dir=tmp_path).model is None
