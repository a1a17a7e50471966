"""The `clip` space: OpenCLIP's image and text towers in one embedding space."""
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


class ClipEmbedder(Embedder):
    """OpenCLIP image and text towers in one space (`open_clip.create_model_and_transforms`).

    `pretrained` is a hub tag (e.g. "laion2b_s34b_b79k", downloaded only when ALLOW_DOWNLOADS is
    set or already cached) or a local checkpoint path. `model_config` registers an extra model
    config JSON (its file stem is the model name), e.g. a small model for tests.
    """

    space = "clip"
    supports_text_queries = True

    @classmethod
    def from_settings(cls, settings: Any) -> ClipEmbedder:
        """The `clip` space as configured: CLIP_MODEL, CLIP_PRETRAINED, CLIP_MODEL_CONFIG, DEVICE, CLIP_RUNTIME."""
        return cls(settings.clip_model, settings.clip_pretrained, settings.clip_model_config,
                   device=settings.device, runtime=settings.clip_runtime, export_dir=settings.export_dir)

    def __init__(self, model_name: str, pretrained: str, model_config: Path | None = None, device: str = "cpu",
                 runtime: str = "auto", export_dir: Path | str | None = None, num_threads: int = 2):
        """`runtime`: torch, or onnx (both towers exported once by torch's exporter to `export_dir`, run by ONNX
        Runtime; parity-tested within a cosine of 0.999); auto = onnx on the CPU, torch on a GPU or when the
        export fails."""
        super().__init__()
        self.model_name, self.pretrained, self.model_config = model_name, pretrained, model_config
        self.device = resolve_device(device)
        self._identity: SpaceIdentity | None = None
        self.runtime = runtime
        self.export_dir = Path(export_dir or DEFAULT_EXPORT_DIR)
        self.num_threads = num_threads
        self._image_session = self._text_session = None

    @property
    def identity(self) -> SpaceIdentity:
        if self._identity is None:
            import open_clip  # noqa: PLC0415

            if self.model_config:
                open_clip.add_model_config(self.model_config)
            cfg = open_clip.get_model_config(self.model_name)
            if cfg is None:
                raise ValueError(f"unknown OpenCLIP model {self.model_name!r}; set CLIP_MODEL or CLIP_MODEL_CONFIG")
            p = Path(self.pretrained)
            weights = file_sha256(p) if p.is_file() else self.pretrained
            self._identity = SpaceIdentity(self.space, f"open_clip:{self.model_name}", weights, int(cfg["embed_dim"]))
        return self._identity

    def _check_hf_text_tower(self) -> None:
        """Models whose text tower is a Hugging Face model (e.g. the multilingual `xlm-roberta-base-ViT-B-32`)
        need its config and tokenizer from the hub: fail with what to download when they are not cached.

        Raises:
            RuntimeError: the tokenizer / text model is not available (offline and not cached).
        """
        import open_clip  # noqa: PLC0415

        text_cfg = (open_clip.get_model_config(self.model_name) or {}).get("text_cfg", {})
        names = list(dict.fromkeys(n for n in (text_cfg.get("hf_tokenizer_name"), text_cfg.get("hf_model_name")) if n))
        if not names:
            return
        from transformers import AutoConfig, AutoTokenizer  # noqa: PLC0415

        for name in names:
            try:
                AutoTokenizer.from_pretrained(name)
                AutoConfig.from_pretrained(name)
            except Exception as e:  # OSError offline; ValueError / HF errors for other failures
                raise RuntimeError(
                    f"CLIP_MODEL={self.model_name} needs the Hugging Face tokenizer and config {name!r}, which are not "
                    f"on this machine ({type(e).__name__}). On a machine with a network run once with "
                    f"ALLOW_DOWNLOADS=1 (or `huggingface-cli download {name}`) so they are cached, and give its "
                    f"weights as CLIP_PRETRAINED (e.g. `python -m clip_embedder.scripts.fetch_assets --download --clip "
                    f"--clip-model {self.model_name} --clip-pretrained laion5b_s13b_b90k`); or choose another "
                    "CLIP_MODEL.") from e

    def _load(self) -> None:
        import open_clip  # noqa: PLC0415
        import torch  # noqa: PLC0415

        _ = self.identity  # registers the config
        self._check_hf_text_tower()
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                self.model_name, pretrained=self.pretrained, device=self.device)
        except Exception as e:
            raise RuntimeError(
                f"cannot load OpenCLIP {self.model_name} weights {self.pretrained!r}: {e}. Set CLIP_PRETRAINED to a "
                "local checkpoint file, or ALLOW_DOWNLOADS=1 on a machine with a network, or drop clip from SPACES."
            ) from e
        self._torch = torch
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(self.model_name)
        if self.runtime == "onnx" or (self.runtime == "auto" and str(self.device) == "cpu"):
            sessions = onnx_or_fallback(self._onnx_sessions, required=self.runtime == "onnx", setting="CLIP_RUNTIME",
                                        what=f"CLIP {self.model_name}", fallback="torch")
            if sessions is not None:
                self._image_session, self._text_session = sessions
        self.runtime = "onnx" if self._image_session is not None else "torch"

    def _onnx_sessions(self) -> tuple[Any, Any]:
        """ONNX Runtime sessions of the image and the text tower, each exported once (dynamic batch), cached in
        `export_dir` by the space identity's hash."""
        import hashlib  # noqa: PLC0415

        import torch  # noqa: PLC0415

        model = self._model
        key = hashlib.sha256(f"{self.identity.model}|{self.identity.weights}".encode()).hexdigest()[:16]
        size = self._preprocess(Image.new("RGB", (8, 8))).shape  # (3, H, W)

        class Tower(torch.nn.Module):
            def __init__(self, encode) -> None:
                super().__init__()
                self.model, self.encode = model, encode

            def forward(self, x):
                return self.encode(x)

        sessions = []
        for name, encode, probe in (("image", model.encode_image, torch.zeros((2, *size))),
                                    ("text", model.encode_text, self._tokenizer(["a photo of a dog", "a cat"]))):
            def write(tmp: str, encode=encode, probe=probe) -> None:
                torch_to_onnx(Tower(encode), (probe,), tmp, input_names=["x"], output_names=["embedding"],
                              dynamic_axes={"x": {0: "batch"}, "embedding": {0: "batch"}})

            path = export_once(self.export_dir / f"clip_{name}_{key}.onnx", write)
            sessions.append(ort_session(path, self.num_threads))
        return sessions[0], sessions[1]

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        self.load()
        torch = self._torch
        if not images:
            return np.zeros((0, self.identity.dim), np.float32)
        x = torch.stack([self._preprocess(im.convert("RGB")) for im in images])
        if self._image_session is not None:
            return l2_normalize(self._image_session.run(None, {"x": x.numpy()})[0].astype(np.float32))
        with torch.inference_mode():
            return l2_normalize(self._model.encode_image(x.to(self.device)).float().cpu().numpy())

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        self.load()
        torch = self._torch
        if not texts:
            return np.zeros((0, self.identity.dim), np.float32)
        tokens = self._tokenizer(texts)
        if self._text_session is not None:
            return l2_normalize(self._text_session.run(None, {"x": tokens.numpy().astype(np.int64)})[0]
                                .astype(np.float32))
        with torch.inference_mode():
            return l2_normalize(self._model.encode_text(tokens.to(self.device)).float().cpu().numpy())
