"""An OpenAI-compatible chat-completions provider (`ANALYSIS_PROVIDER=openai`): OpenAI, Azure OpenAI's v1 API, and
the local servers that speak the same protocol (Ollama, vLLM, llama.cpp's server), through the `openai` SDK.

The image goes as a base64 `data:image/jpeg` URL in an `image_url` content part, the answer is constrained by a
JSON-schema `response_format` (structured outputs, `strict`); retries are ours (`HostedProvider`), the SDK's are off.
"""
from __future__ import annotations

import base64
from typing import Any

from clip_embedder.analysis.providers.base import SCHEMAS, HostedProvider, Prompts, ProviderError, RetryableError


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


class OpenAiProvider(HostedProvider):
    """Chat completions at ANALYSIS_BASE_URL with ANALYSIS_MODEL and ANALYSIS_API_KEY (a secret: never logged)."""

    provider = "openai"

    @classmethod
    def from_settings(cls, settings: Any) -> OpenAiProvider:
        """As configured: ANALYSIS_BASE_URL, ANALYSIS_MODEL, ANALYSIS_API_KEY, ANALYSIS_TEMPERATURE,
        ANALYSIS_MAX_TOKENS, ANALYSIS_TIMEOUT_S, ANALYSIS_MAX_RETRIES, ANALYSIS_PROMPTS_DIR."""
        key = settings.analysis_api_key.get_secret_value() if settings.analysis_api_key else None
        return cls(settings.analysis_base_url, settings.analysis_model, api_key=key,
                   temperature=settings.analysis_temperature, max_tokens=settings.analysis_max_tokens,
                   timeout_s=settings.analysis_timeout_s, max_retries=settings.analysis_max_retries,
                   prompts=Prompts.load(settings.analysis_prompts_dir))

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, **kw: Any):
        super().__init__(model, **kw)
        try:
            from openai import OpenAI  # noqa: PLC0415
        except ImportError as e:
            raise RuntimeError("ANALYSIS_PROVIDER=openai needs the PyPI package openai==3.57.0") from e
        # local servers (Ollama, vLLM, llama.cpp) take any key; the SDK refuses to start without one
        self._client = OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=self.timeout_s, max_retries=0)
        self.base_url = base_url

    def _call(self, task: str, prompt: str, jpeg: bytes) -> tuple[str, int, int]:
        import openai  # noqa: PLC0415

        url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
        try:
            r = self._client.chat.completions.create(
                model=self.model, temperature=self.temperature, max_tokens=self.max_tokens,
                messages=[{"role": "user", "content": [{"type": "text", "text": prompt},
                                                       {"type": "image_url", "image_url": {"url": url}}]}],
                response_format={"type": "json_schema",
                                 "json_schema": {"name": task, "strict": True, "schema": SCHEMAS[task]}})
        except openai.APITimeoutError:
            raise RetryableError(f"no answer within {self.timeout_s:g}s (ANALYSIS_TIMEOUT_S)", status=504) from None
        except openai.APIConnectionError as e:
            raise RetryableError(f"cannot reach {self.base_url}: {e}", status=502) from None
        except openai.APIStatusError as e:
            if e.status_code == 429 or e.status_code >= 500:
                raise RetryableError(f"HTTP {e.status_code} from {self.base_url}", status=e.status_code,
                                     retry_after=_retry_after(e.response)) from None
            hint = " (check ANALYSIS_API_KEY)" if e.status_code in (401, 403) else \
                " (check ANALYSIS_MODEL and ANALYSIS_BASE_URL)" if e.status_code == 404 else ""
            raise ProviderError(f"openai-compatible API at {self.base_url} refused the request: HTTP {e.status_code}"
                                f"{hint}: {str(e.message)[:300]}") from None
        if not r.choices or r.choices[0].message.content is None:
            return "", 0, 0
        usage = r.usage
        return (r.choices[0].message.content, usage.prompt_tokens if usage else 0,
                usage.completion_tokens if usage else 0)
