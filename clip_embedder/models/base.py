"""The lifecycle every model shares (in the style of Immich machine-learning's `InferenceModel`): built cheaply from
the settings, loaded on first use under a lock, then served."""
from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from typing import Self


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
