"""Analysis providers (`ANALYSIS_PROVIDER`, the registry `ANALYSIS_PROVIDERS`): `local` (this service's models),
`openai` (OpenAI-compatible chat completions) and `bedrock` (Claude on Amazon Bedrock). Each has
`analyse(image, tasks, prompt=None) -> Analysis`."""
from __future__ import annotations

from typing import Any

from clip_embedder.analysis.providers.base import HostedProvider, Prompts, ProviderError
from clip_embedder.analysis.providers.bedrock import BedrockProvider
from clip_embedder.analysis.providers.openai_compat import OpenAiProvider

__all__ = ["BedrockProvider", "HostedProvider", "OpenAiProvider", "Prompts", "ProviderError", "build_local"]


def build_local(settings: Any) -> Any:
    """The local analyser from the settings (its models built now, loaded on first use)."""
    from clip_embedder.analysis.local import LocalAnalyser  # noqa: PLC0415

    return LocalAnalyser.from_settings(settings)
