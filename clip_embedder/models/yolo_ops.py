"""YOLOv5's pre- and post-processing, without importing the `yolov5` package.

Importing anything from the yolov5 pip package runs its `__init__`, which imports its training stack (data loaders,
plots with seaborn and pandas, ultralytics' checks): ~3.5 s of every process start on this project's 2-core
machine, for three small functions. The detector's exported runtimes (ONNX Runtime, OpenVINO) need only these,
so they live here, ported from yolov5 7.0 (`utils/augmentations.py: letterbox`, `utils/general.py:
non_max_suppression, scale_boxes, clip_boxes, xywh2xyxy`) with the arguments this project calls them with
(auto=True letterbox; single-label, class-aware NMS; no time limit). `tests/test_detector.py` checks them
against yolov5's own functions on COCO128 images (equal arrays, equal detections).

They run on numpy arrays, not torch tensors, so the serving image (API, workers, page) runs the exported detector
without torch installed; NMS is torchvision's greedy algorithm (`torchvision/csrc/ops/cpu/nms_kernel.cpp`: by
descending score, drop every later box whose IoU with a kept one is above the threshold), in float32 as there.
"""
from __future__ import annotations

import cv2
import numpy as np

MAX_WH = 7680  # pixels: the class offset of class-aware NMS (yolov5's max_wh)
MAX_NMS = 30000  # boxes handed to NMS at most (yolov5's max_nms)


def letterbox(im: np.ndarray, new_shape: int, stride: int = 32, color: tuple[int, int, int] = (114, 114, 114)
              ) -> np.ndarray:
    """Resize `im` (H, W, 3) uint8 so its longer side is `new_shape` pixels, keeping its aspect, and pad each side to
    the next multiple of `stride` with `color` (yolov5's `letterbox(..., auto=True)`: the minimum rectangle).

    Returns:
        uint8 (h, w, 3), h and w multiples of `stride`.
    """
    h, w = im.shape[:2]
    r = min(new_shape / h, new_shape / w)
    new_unpad = int(round(w * r)), int(round(h * r))
    dw, dh = np.mod(new_shape - new_unpad[0], stride) / 2, np.mod(new_shape - new_unpad[1], stride) / 2
    if (w, h) != new_unpad:
        im = cv2.resize(im, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    return cv2.copyMakeBorder(im, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)


def xywh2xyxy(x: np.ndarray) -> np.ndarray:
    """Boxes (n, 4) from centre x, centre y, width, height to x1, y1, x2, y2 (a new array, same dtype)."""
    y = x.copy()
    y[..., 0] = x[..., 0] - x[..., 2] / 2
    y[..., 1] = x[..., 1] - x[..., 3] / 2
    y[..., 2] = x[..., 0] + x[..., 2] / 2
    y[..., 3] = x[..., 1] + x[..., 3] / 2
    return y


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Greedy NMS (torchvision.ops.nms): indices of the kept boxes, by descending score.

    Args:
        boxes: (n, 4) float32 xyxy. scores: (n,) float32. iou_thres: a box whose IoU with a kept, higher-scoring
            box is above this is dropped.
    Returns:
        int64 indices into `boxes`.
    """
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), np.float32(0))
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), np.float32(0))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_thres)]
    return np.asarray(keep, dtype=np.int64)


def non_max_suppression(prediction: np.ndarray, conf_thres: float = 0.25, iou_thres: float = 0.45,
                        max_det: int = 300) -> list[np.ndarray]:
    """Class-aware NMS of raw YOLOv5 predictions, the best class per box (yolov5's defaults: multi_label=False,
    agnostic=False).

    Args:
        prediction: (batch, anchors, 5 + classes) float32: centre x, centre y, w, h in input pixels, objectness,
            class scores.
        conf_thres: minimum objectness and minimum objectness x class score. iou_thres: NMS IoU.

    Returns:
        One (n, 6) float32 array per image: x1, y1, x2, y2, score, class id; by descending score, at most `max_det`.
    """
    output = [np.zeros((0, 6), np.float32)] * prediction.shape[0]
    for xi, x in enumerate(prediction):
        x = x[x[:, 4] > conf_thres].copy()
        if not x.shape[0]:
            continue
        x[:, 5:] *= x[:, 4:5]  # score = objectness x class score
        box = xywh2xyxy(x[:, :4])
        j = x[:, 5:].argmax(1)
        conf = x[np.arange(len(x)), 5 + j]
        x = np.concatenate((box, conf[:, None], j[:, None].astype(np.float32)), 1)[conf > conf_thres]
        if not x.shape[0]:
            continue
        x = x[np.argsort(-x[:, 4], kind="stable")[:MAX_NMS]]
        keep = nms(x[:, :4] + x[:, 5:6] * np.float32(MAX_WH), x[:, 4], iou_thres)[:max_det]
        output[xi] = x[keep]
    return output


def scale_boxes(img1_shape: tuple[int, ...], boxes: np.ndarray, img0_shape: tuple[int, ...]) -> np.ndarray:
    """Boxes (n, 4) xyxy in the letterboxed image's pixels (`img1_shape` (h, w)) → the original image's pixels
    (`img0_shape` (h, w, …)), clipped to it. Modifies and returns `boxes`."""
    gain = min(img1_shape[0] / img0_shape[0], img1_shape[1] / img0_shape[1])
    pad = (img1_shape[1] - img0_shape[1] * gain) / 2, (img1_shape[0] - img0_shape[0] * gain) / 2
    boxes[..., [0, 2]] -= pad[0]
    boxes[..., [1, 3]] -= pad[1]
    boxes[..., :4] /= gain
    np.clip(boxes[..., 0], 0, img0_shape[1], out=boxes[..., 0])
    np.clip(boxes[..., 1], 0, img0_shape[0], out=boxes[..., 1])
    np.clip(boxes[..., 2], 0, img0_shape[1], out=boxes[..., 2])
    np.clip(boxes[..., 3], 0, img0_shape[0], out=boxes[..., 3])
    return boxes
