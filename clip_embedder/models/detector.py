"""YOLOv5 object detection from a local weights file, batched, offline.

Two weight formats load:
- the release / training checkpoint pickle (`yolov5n.pt`, `best.pt`): a pickled
  `models.yolo.DetectionModel`; unpickling runs code, so only load files you trust (your own
  training runs, the official release, an MLflow run of yours);
- the plain state-dict format `{format, yaml, names, stride, state_dict}`, which loads with
  `torch.load(weights_only=True)` and is safe for any file.

Runtimes (`DETECTOR_RUNTIME`): `torch` runs the model as loaded; `onnx` (ONNX Runtime) and `openvino` run
the same weights exported once to ONNX (cached by the weights' sha256 under `EXPORT_DIR`, dynamic
batch and image size); `auto` = ONNX Runtime on the CPU (measured fastest here: yolov5n at 640x480 29 ms
per image against 57 ms for torch and 35 ms for OpenVINO, 2 cores), torch on a GPU. Pre- and
post-processing (letterbox, NMS, box scaling: `clip_embedder/yolo_ops.py`, equal to yolov5's own) are shared, so
the runtimes differ only by the forward pass (parity-tested: same labels, boxes within 1 px, scores within 0.01).
Once exported, a start runs the export with the names and stride of its JSON sidecar, without loading the weights
or importing yolov5 (4.3 → 0.1 s) — and without torch: the serving image (API, workers, page) has no torch
installed; torch is imported only to load weights, export them, or run the `torch` runtime.

Images are letterboxed to the smallest stride multiple holding them (yolov5's rectangular inference, as
its `val.py --rect`), not padded to a square, and a batch is run as one forward per distinct shape.
"""
from __future__ import annotations

import json
import logging
import threading
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from clip_embedder import offline  # must precede the yolov5 import
from clip_embedder.images import file_sha256  # noqa: F401  (re-exported: weights identities)
from clip_embedder.models.runtimes import (  # noqa: F401  (resolve_device re-exported)
    DEFAULT_EXPORT_DIR,
    export_once,
    open_session,
    require_torch,
    resolve_device,
    torch_to_onnx,
)
from clip_embedder.models.yolo_ops import letterbox, non_max_suppression, scale_boxes

log = logging.getLogger(__name__)

RUNTIMES = ("torch", "onnx", "openvino")


@dataclass(frozen=True)
class Detection:
    """One detected object. `bbox` is (x1, y1, x2, y2) in pixels of the original image."""

    label: str
    class_id: int
    score: float
    bbox: tuple[float, float, float, float]


class Detector:
    """A YOLOv5 detector. Build with `Detector.load(path)`; call `detect(images)`.

    Thread-safe: `detect` holds a lock around the forward pass.
    """

    #: where the weights came from (a local file, or the MLflow run / registered version), for /api/health
    source: dict

    def __init__(self, model: Any, names: list[str], *, weights_path: Path, weights_sha256: str,
                 imgsz: int = 640, conf: float = 0.25, iou: float = 0.45, max_det: int = 100,
                 device: str = "cpu", runtime: str = "torch", export_dir: Path | None = None,
                 stride: int | None = None, weights_format: str = "pickle"):
        """`model`: the YOLOv5 torch module, or None: only the export in `export_dir` runs (it must exist;
        `Detector.load` checks), with `stride` and `names` from its sidecar. `device`: as `resolve_device` returns."""
        self.model = model
        self.names = names
        self.weights_path = weights_path
        self.weights_sha256 = weights_sha256
        self.weights_format = weights_format
        self.stride = int(stride or max(int(model.stride.max().item()) if hasattr(model, "stride") else 32, 32))
        self.imgsz = int(np.ceil(imgsz / self.stride) * self.stride)
        self.conf, self.iou, self.max_det = conf, iou, max_det
        self.device = device
        self._lock = threading.Lock()
        runtime = _resolve_runtime(runtime, self.device)
        if runtime == "torch" and model is None:
            raise ValueError("the torch runtime needs the model itself; load it with Detector.load")
        self.runtime = runtime
        self._session: Any = None
        if runtime != "torch":
            onnx_path = self.export_onnx(Path(export_dir or DEFAULT_EXPORT_DIR))
            self._session = open_session(runtime, onnx_path)

    @staticmethod
    def export_paths(export_dir: Path, weights_sha256: str) -> tuple[Path, Path]:
        """(the ONNX file, its JSON sidecar: class names, stride, the weights' format) for these weights."""
        stem = Path(export_dir) / f"yolov5_{weights_sha256[:16]}"
        return stem.with_suffix(".onnx"), stem.with_suffix(".json")

    def export_onnx(self, export_dir: Path) -> Path:
        """The model as ONNX (dynamic batch, height and width; opset 17), exported once per weights sha256, with a
        JSON sidecar of what a later start needs to run it without loading the weights (names, stride, format).

        The arguments are those of yolov5's own exporter (`yolov5/export.py: export_onnx`: input "images",
        output "output0", constant folding; the stride and names it writes as ONNX metadata go to the sidecar here);
        it is called through torch's TorchScript-based exporter (`dynamo=False`) because torch >= 2.9 defaults to
        the torch.export one, which needs `onnxscript`. Both files are written atomically: a crash leaves no half
        file.

        Returns:
            The `.onnx` path under `export_dir`.

        Raises:
            RuntimeError: there is no export yet and this detector has no model to export (loaded from one).
        """
        onnx_path, meta_path = self.export_paths(export_dir, self.weights_sha256)

        def write(tmp: str) -> None:
            if self.model is None:
                raise RuntimeError(f"{onnx_path} is gone; load the detector from its weights to export it again")
            import copy  # noqa: PLC0415

            model = copy.deepcopy(self.model).float().cpu().eval()
            for m in model.modules():  # as yolov5's exporter: one output, grids rebuilt for any input size
                if type(m).__name__ == "Detect":
                    setattr(m, "export", True)  # noqa: B010  (yolov5's flags, not typed on nn.Module)
                    setattr(m, "dynamic", True)  # noqa: B010
            import torch  # noqa: PLC0415

            with self._lock, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings of yolov5's Python-side branches (sizes are dynamic)
                torch_to_onnx(model, (torch.zeros(1, 3, self.imgsz, self.imgsz),), tmp, input_names=["images"],
                              output_names=["output0"], dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                                                      "output0": {0: "batch", 1: "anchors"}})

        export_once(onnx_path, write)
        meta = {"names": self.names, "stride": self.stride, "weights_format": self.weights_format}
        export_once(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
        return onnx_path

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """Raw predictions (n, anchors, 5 + classes) float32 for a letterboxed float32 batch (n, 3, h, w) in 0..1."""
        if self.runtime == "torch":
            import torch  # noqa: PLC0415

            assert self.model is not None  # __init__ refuses torch without a model
            with self._lock, torch.inference_mode():
                pred = self.model(torch.from_numpy(x).to(self.device))
            pred = pred[0] if isinstance(pred, (list, tuple)) else pred
            return pred.float().cpu().numpy()
        with self._lock:
            if self.runtime == "onnx":
                out = self._session.run(None, {"images": x})[0]
            else:
                out = self._session(x)[0]
        return np.asarray(out, dtype=np.float32)

    @classmethod
    def load(cls, weights: str | Path, *, imgsz: int = 640, conf: float = 0.25, iou: float = 0.45,
             max_det: int = 100, device: str | None = "cpu", allow_pickle: bool = True, runtime: str = "torch",
             export_dir: Path | None = None) -> "Detector":
        """Load YOLOv5 weights from a local file.

        Args:
            weights: path to a `.pt` checkpoint (release/training pickle or state-dict format).
            allow_pickle: also accept a pickled checkpoint (it can run code when loaded: only for a file the
                user named). Weights fetched from an MLflow server are loaded with False: the state-dict
                format only (`torch.load(weights_only=True)`).
            imgsz: square inference size in pixels, rounded up to the model stride.
            conf: minimum confidence kept after NMS. iou: NMS IoU threshold.
            max_det: detections kept per image. device: "cpu", "0", "cuda:0"… (CPU fallback).
            runtime: "torch", "onnx", "openvino" or "auto" (ONNX Runtime on the CPU, torch on a GPU).
            export_dir: where the ONNX export is cached (default models/exported).

        Raises:
            FileNotFoundError: `weights` does not exist (nothing is downloaded; run
                `make weights` or set DETECTOR_WEIGHTS / MODEL_URI).
            ValueError: the file is not a YOLOv5 checkpoint, or is a pickle and `allow_pickle` is False.
        """
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"YOLOv5 weights not found at {path}. Set DETECTOR_WEIGHTS to a local .pt file, MODEL_URI to an "
                "MLflow model, or fetch the release weights with `python -m clip_embedder.scripts.fetch_assets`.")
        dev = resolve_device(device)
        exported = cls._from_export(path, allow_pickle=allow_pickle, imgsz=imgsz, conf=conf, iou=iou,
                                    max_det=max_det, device=dev, runtime=runtime, export_dir=export_dir)
        if exported is not None:
            return exported
        require_torch(f"the detector weights {path.name} have no ONNX export in {export_dir or DEFAULT_EXPORT_DIR}")
        model, names, weights_format = _read_checkpoint(path, allow_pickle=allow_pickle)
        names = list(names.values()) if isinstance(names, dict) else list(names)
        model.eval()
        if hasattr(model, "fuse"):
            model = model.fuse()
        for m in model.modules():  # settings the yolov5 loader applies to older checkpoints
            if type(m).__name__ == "Detect":
                m.inplace = True
        model.to(dev)
        return cls(model, names, weights_path=path, weights_sha256=file_sha256(path), imgsz=imgsz, conf=conf,
                   iou=iou, max_det=max_det, device=dev, runtime=runtime, export_dir=export_dir,
                   weights_format=weights_format)

    @classmethod
    def _from_export(cls, path: Path, *, allow_pickle: bool, device: str, runtime: str,
                     export_dir: Path | None, **kw: Any) -> "Detector | None":
        """The detector run from its existing export (ONNX Runtime / OpenVINO) without loading the weights or
        importing yolov5 (~4 s of every start); None when the runtime is torch, there is no export of these
        weights yet (or no sidecar: an export older than the sidecars), or the weights are a pickle that
        `allow_pickle` refuses (the export must not let through what loading would refuse)."""
        if _resolve_runtime(runtime, device) == "torch":
            return None
        sha = file_sha256(path)
        onnx_path, meta_path = cls.export_paths(Path(export_dir or DEFAULT_EXPORT_DIR), sha)
        if not (onnx_path.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            names, stride, fmt = list(meta["names"]), int(meta["stride"]), str(meta["weights_format"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring the unreadable %s (%s): loading the weights", meta_path, e)
            return None
        if fmt != "state_dict" and not allow_pickle:
            return None
        return cls(None, names, weights_path=path, weights_sha256=sha, device=device, runtime=runtime,
                   export_dir=export_dir, stride=stride, weights_format=fmt, **kw)

    @staticmethod
    def save_state_dict(checkpoint: str | Path, out: str | Path) -> Path:
        """Write a YOLOv5 checkpoint (a local pickle this process trusts, e.g. one it just trained) in the
        state-dict format: `{format, yaml, names, stride, state_dict (fp16)}`, loadable with
        `torch.load(..., weights_only=True)` and by `Detector.load(..., allow_pickle=False)`.

        Returns:
            `out`. Raises ValueError: not a YOLOv5 checkpoint.
        """
        import torch  # noqa: PLC0415

        ckpt = torch.load(Path(checkpoint), map_location="cpu", weights_only=False)
        if isinstance(ckpt, dict) and "state_dict" in ckpt and "yaml" in ckpt:
            d = ckpt
        else:
            model: Any = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else ckpt
            if not isinstance(model, torch.nn.Module):
                raise ValueError(f"{checkpoint} is not a YOLOv5 checkpoint (no model inside)")
            names: Any = model.names
            cfg: Any = model.yaml
            strides: Any = model.stride
            d = {"format": f"yolov5 state_dict (from {Path(checkpoint).name})", "yaml": dict(cfg),
                 "names": list(names.values()) if isinstance(names, dict) else list(names),
                 "stride": [float(s) for s in strides],
                 "state_dict": {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}}
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(d, out)
        return out

    def warm_up(self) -> None:
        """One detection on a blank image (first-run set-up, deferred imports), logging instead of raising."""
        try:
            self.detect([Image.new("RGB", (self.stride * 2, self.stride * 2))])
        except Exception as e:  # the first real query will report it
            log.warning("detector warm-up failed: %s", e)

    def detect(self, images: list[Image.Image]) -> list[list[Detection]]:
        """Detect objects in a batch of RGB images.

        Args:
            images: PIL images of any sizes (converted to RGB).

        Returns:
            One list per image, sorted by descending score; boxes are xyxy pixels of that image,
            clipped to it.
        """
        if not images:
            return []
        arrays = [np.asarray(im.convert("RGB")) for im in images]
        boxed = [letterbox(a, self.imgsz, stride=self.stride) for a in arrays]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, b in enumerate(boxed):  # one forward per letterboxed shape (most photos share one or two)
            groups[b.shape].append(i)
        results: list[list[Detection]] = [[] for _ in images]
        for idx in groups.values():
            x = np.ascontiguousarray(np.stack([boxed[i] for i in idx]).transpose(0, 3, 1, 2)).astype(np.float32)
            x /= np.float32(255)
            out = non_max_suppression(self._forward(x), self.conf, self.iou, max_det=self.max_det)
            for i, det in zip(idx, out):
                if len(det):
                    det[:, :4] = scale_boxes(x.shape[2:], det[:, :4], arrays[i].shape).round()
                results[i] = [
                    Detection(label=self.names[int(c)], class_id=int(c), score=round(float(s), 4),
                              bbox=(float(x1), float(y1), float(x2), float(y2)))
                    for x1, y1, x2, y2, s, c in det.tolist()
                ]
        return results


def _read_checkpoint(path: Path, *, allow_pickle: bool) -> tuple[Any, Any, str]:
    """The YOLOv5 model in a checkpoint file (on the CPU, float32), its class names (list or dict) and the file's
    format ("state_dict" or "pickle").

    Raises:
        ValueError: not a YOLOv5 checkpoint, or a pickle while `allow_pickle` is False.
    """
    import torch  # noqa: PLC0415

    offline.import_yolov5()
    from yolov5.models.yolo import DetectionModel  # noqa: PLC0415

    weights_format = "state_dict"
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        if not allow_pickle:
            raise ValueError(
                f"{path.name} is a pickled checkpoint, which can run code when loaded; weights from a tracking "
                "server are only loaded in the state-dict format. Log the run again with this project's "
                "yolov5/train_mlflow.py or baseline.py (they log state dicts), or point DETECTOR_WEIGHTS at a "
                "local file you trust.") from e
        # Release/training checkpoints are pickles of yolov5 classes (see the module docstring).
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        weights_format = "pickle"
    if isinstance(ckpt, dict) and "state_dict" in ckpt and "yaml" in ckpt:
        model = DetectionModel(cfg=ckpt["yaml"], ch=3, nc=len(ckpt["names"]))
        model.load_state_dict({k: v.float() for k, v in ckpt["state_dict"].items()})
        names = ckpt["names"]
    elif isinstance(ckpt, dict) and isinstance(ckpt.get("ema") or ckpt.get("model"), torch.nn.Module):
        model = (ckpt.get("ema") or ckpt["model"]).float()
        names = model.names
    elif isinstance(ckpt, torch.nn.Module):
        model, names = ckpt.float(), ckpt.names
    else:
        raise ValueError(f"{path} is not a YOLOv5 checkpoint (no model / state_dict inside)")
    return model, names, weights_format


def _resolve_runtime(runtime: str, device: str) -> str:
    """DETECTOR_RUNTIME with auto resolved: ONNX Runtime on the CPU, torch elsewhere.

    Raises:
        ValueError: an unknown runtime.
    """
    if runtime == "auto":
        runtime = "torch" if device != "cpu" else "onnx"
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown DETECTOR_RUNTIME {runtime!r}; choose from auto, {', '.join(RUNTIMES)}")
    return runtime


def load_detector(settings) -> Detector:
    """The detector named by the settings: `MODEL_URI` / `MLFLOW_RUN_ID` (through MLflow) or `DETECTOR_WEIGHTS`.

    Raises:
        FileNotFoundError: no weights at DETECTOR_WEIGHTS. RuntimeError: MLflow resolution failed.
        ValueError: weights from MLflow that are a pickle, not the state-dict format.
    """
    weights: str | Path = settings.detector_weights
    source: dict = {"weights": str(weights)}
    from_server = bool(settings.model_uri or settings.mlflow_run_id)
    if from_server:
        from clip_embedder.models.mlflow_registry import fetch_detector_weights  # noqa: PLC0415

        fetched = fetch_detector_weights(settings)
        weights, source = fetched.path, fetched.describe()
    # weights from a tracking server are never unpickled (whoever can write there would run code here)
    detector = Detector.load(weights, imgsz=settings.detector_imgsz, conf=settings.detector_conf,
                             iou=settings.detector_iou, max_det=settings.detector_max_det, device=settings.device,
                             allow_pickle=not from_server, runtime=settings.detector_runtime,
                             export_dir=settings.export_dir)
    detector.source = source
    return detector
