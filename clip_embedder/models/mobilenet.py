"""The `mobilenet` space: the ImageNet MobileNet-v1 embedder (image only); its features feed the tagger too."""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from clip_embedder import offline  # noqa: F401
from clip_embedder.models.detector import file_sha256, resolve_device
from clip_embedder.models.embedders import Embedder, SpaceIdentity, l2_normalize
from clip_embedder.models.runtimes import DEFAULT_EXPORT_DIR, export_once, onnx_or_fallback, ort_session, torch_to_onnx

log = logging.getLogger(__name__)


class MobileNetEmbedder(Embedder):
    """ImageNet MobileNet-v1 (224x224, uint8) embedding extractor.

    The model's 1024-d uint8 output is dequantised with its own (scale, zero point) and
    L2-normalised. Images are resized (not cropped) to 224x224 with bilinear filtering.

    `runtime`: "tflite" runs the .tflite file with `ai-edge-litert`; "onnx" runs the same quantised graph
    converted once with `tflite2onnx` (cached by sha256 under `export_dir`) on ONNX Runtime, whose int8 kernels
    are ~2x faster here, with the same uint8 features (the converted graph quantises its float input and output
    with the model's own parameters; parity-tested bit-exact on COCO128 crops); "auto" = onnx, or tflite
    (one warning) when the conversion fails. The space identity is the .tflite file's either way.
    """

    space = "mobilenet"

    @classmethod
    def from_settings(cls, settings: Any) -> MobileNetEmbedder:
        """The `mobilenet` space as configured: MOBILENET_WEIGHTS, MOBILENET_RUNTIME, EXPORT_DIR."""
        return cls(settings.mobilenet_weights, runtime=settings.mobilenet_runtime, export_dir=settings.export_dir)

    def __init__(self, weights: Path, num_threads: int = 2, runtime: str = "tflite", export_dir: Path | None = None):
        super().__init__()
        self.weights = Path(weights)
        self.num_threads = num_threads
        self.runtime = runtime
        self.export_dir = Path(export_dir or DEFAULT_EXPORT_DIR)
        self._batch = 0
        self._session = None

    @property
    def identity(self) -> SpaceIdentity:
        if not self.weights.is_file():
            raise FileNotFoundError(
                f"MobileNet embedder not found at {self.weights}. Set MOBILENET_WEIGHTS to the .tflite file, or "
                "fetch it with `python -m clip_embedder.scripts.fetch_assets`.")
        if not hasattr(self, "_identity"):
            self._identity = SpaceIdentity(self.space, "tflite:mobilenet_v1_1.0_224_quant_embedding_extractor",
                                           file_sha256(self.weights), 1024)
        return self._identity

    def _load(self) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

        _ = self.identity
        self._it = Interpreter(str(self.weights), num_threads=self.num_threads)
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        self._h, self._w = int(self._in["shape"][1]), int(self._in["shape"][2])
        self._run_lock = threading.Lock()
        if self.runtime in ("auto", "onnx"):
            self._session = onnx_or_fallback(self._onnx_session, required=self.runtime == "onnx",
                                             setting="MOBILENET_RUNTIME", what=f"MobileNet {self.weights.name}",
                                             fallback="tflite")
        self.runtime = "onnx" if self._session is not None else "tflite"

    def _onnx_session(self) -> Any:
        """The ONNX Runtime session of the model converted once by `tflite2onnx` (cached by sha256)."""
        def write(tmp: str) -> None:
            import tflite2onnx  # noqa: PLC0415

            os.unlink(tmp)  # tflite2onnx warns about (and overwrites) an existing file
            tflite2onnx.convert(str(self.weights), tmp)

        session = ort_session(export_once(self.export_dir / f"mobilenet_{self.identity.weights[:16]}.onnx", write),
                              self.num_threads)
        self._onnx_input = session.get_inputs()[0].name
        return session

    def features(self, images: list[Image.Image]) -> np.ndarray:
        """The extractor's raw output: (len(images), 1024) uint8 (quantised; dequantise with
        `quantization`). The ImageNet tagger's head takes exactly these."""
        self.load()
        if not images:
            return np.zeros((0, 1024), np.uint8)
        bilinear = Image.Resampling.BILINEAR
        x = np.stack([np.asarray(im.convert("RGB").resize((self._w, self._h), bilinear), dtype=np.uint8)
                      for im in images])
        if self._session is not None:
            # the converted graph takes the dequantised input (NCHW float) and returns the dequantised output
            in_scale, in_zero = self._in["quantization"]
            out_scale, out_zero = self._out["quantization"]
            xf = ((x.astype(np.float32) - in_zero) * in_scale).transpose(0, 3, 1, 2)
            with self._run_lock:  # the converted graph has a fixed batch of 1
                out = np.stack([self._session.run(None, {self._onnx_input: xf[i:i + 1]})[0].reshape(-1)
                                for i in range(len(xf))])
            return np.clip(np.rint(out / out_scale + out_zero), 0, 255).astype(np.uint8)
        with self._run_lock:
            if self._batch != len(images):
                self._it.resize_tensor_input(self._in["index"], [len(images), self._h, self._w, 3])
                self._it.allocate_tensors()
                self._batch = len(images)
            self._it.set_tensor(self._in["index"], x)
            self._it.invoke()
            return self._it.get_tensor(self._out["index"]).reshape(len(images), -1).copy()

    @property
    def quantization(self) -> tuple[float, int]:
        """(scale, zero point) of the raw features."""
        self.load()
        scale, zero = self._out["quantization"]
        return float(scale), int(zero)

    def from_features(self, features: np.ndarray) -> np.ndarray:
        """Vectors of this space from raw features ((n, 1024) uint8) → (n, 1024) float32, L2-normalised."""
        scale, zero = self.quantization
        return l2_normalize((np.asarray(features, np.float32).reshape(len(features), -1) - zero) * scale)

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        return self.from_features(self.features(images))
