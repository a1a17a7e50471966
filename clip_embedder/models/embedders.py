"""Embedding spaces: the identity of a space, the lazy model lifecycle and the `Embedder` interface that the
embedders of each space implement (`clip_embedder.models.clip`, `.mobilenet`, `.text`; chosen by name from
`clip_embedder.models.registry.EMBEDDING_SPACES`).

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

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Self

import numpy as np
from PIL import Image

from clip_embedder.config import Settings
from clip_embedder.models.base import LazyModel
from clip_embedder.models.registry import EMBEDDING_SPACES


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


def create_embedder(space: str, settings: Settings) -> Embedder:
    """Factory: the embedder for a named space, configured from `settings` (the table is
    `clip_embedder.models.registry.EMBEDDING_SPACES`).

    Raises:
        ValueError: unknown space name.
    """
    return EMBEDDING_SPACES.create(space, settings)
