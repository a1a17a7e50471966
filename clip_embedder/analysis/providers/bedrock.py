"""Anthropic Claude on Amazon Bedrock (`ANALYSIS_PROVIDER=bedrock`): `bedrock-runtime`'s `invoke_model` with the
Anthropic messages body (`anthropic_version: bedrock-2023-05-31`, a base64 image block, then the prompt), the answer
read from `content[0].text` and the tokens from `usage`. Credentials come from the usual AWS chain (variables,
profile, role); botocore's own retries are off, ours (`HostedProvider`) apply."""
from __future__ import annotations

import base64
import json
from typing import Any

from clip_embedder.analysis.providers.base import HostedProvider, Prompts, ProviderError, RetryableError

ANTHROPIC_VERSION = "bedrock-2023-05-31"
#: Bedrock's error codes worth repeating the call for
RETRYABLE_CODES = frozenset({"ThrottlingException", "ServiceUnavailableException", "InternalServerException",
                             "ModelNotReadyException", "ModelTimeoutException", "TooManyRequestsException"})


class BedrockProvider(HostedProvider):
    """Claude on Bedrock: ANALYSIS_MODEL is the model id, ANALYSIS_REGION the region."""

    provider = "bedrock"

    @classmethod
    def from_settings(cls, settings: Any) -> BedrockProvider:
        """As configured: ANALYSIS_MODEL, ANALYSIS_REGION, ANALYSIS_TEMPERATURE, ANALYSIS_MAX_TOKENS,
        ANALYSIS_TIMEOUT_S, ANALYSIS_MAX_RETRIES, ANALYSIS_PROMPTS_DIR."""
        return cls(settings.analysis_model, region=settings.analysis_region,
                   temperature=settings.analysis_temperature, max_tokens=settings.analysis_max_tokens,
                   timeout_s=settings.analysis_timeout_s, max_retries=settings.analysis_max_retries,
                   prompts=Prompts.load(settings.analysis_prompts_dir))

    def __init__(self, model: str, *, region: str | None = None, client: Any = None, **kw: Any):
        super().__init__(model, **kw)
        if client is None:
            import boto3  # noqa: PLC0415
            from botocore.config import Config  # noqa: PLC0415

            client = boto3.client("bedrock-runtime", region_name=region, config=Config(
                read_timeout=self.timeout_s, connect_timeout=min(10.0, self.timeout_s),
                retries={"total_max_attempts": 1, "mode": "standard"}))
        self.client = client

    def body(self, prompt: str, jpeg: bytes) -> dict[str, Any]:
        """The Anthropic messages body of one call (the image first, then the prompt, as Anthropic advises)."""
        return {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": self.max_tokens,
                "temperature": self.temperature,
                "messages": [{"role": "user", "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg",
                                                 "data": base64.b64encode(jpeg).decode()}},
                    {"type": "text", "text": prompt}]}]}

    def _call(self, task: str, prompt: str, jpeg: bytes) -> tuple[str, int, int]:
        from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError  # noqa: PLC0415

        try:
            r = self.client.invoke_model(modelId=self.model, contentType="application/json",
                                         accept="application/json", body=json.dumps(self.body(prompt, jpeg)))
        except ReadTimeoutError:
            raise RetryableError(f"no answer within {self.timeout_s:g}s (ANALYSIS_TIMEOUT_S)", status=504) from None
        except ConnectionError as e:
            raise RetryableError(f"cannot reach Bedrock: {e}", status=502) from None
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            meta = e.response.get("ResponseMetadata", {})
            status = int(meta.get("HTTPStatusCode") or 400)
            if code in RETRYABLE_CODES or status == 429 or status >= 500:
                try:
                    after = float(meta.get("HTTPHeaders", {}).get("retry-after"))
                except (TypeError, ValueError):
                    after = None
                raise RetryableError(f"{code or 'HTTP ' + str(status)} from Bedrock", status=429 if "Throttl" in code
                                     or status == 429 else max(status, 500), retry_after=after) from None
            raise ProviderError(f"Bedrock refused the request: {code}: {e.response.get('Error', {}).get('Message', '')}"
                                " (check ANALYSIS_MODEL, ANALYSIS_REGION and the AWS credentials)") from None
        answer = json.loads(r["body"].read())
        usage = answer.get("usage", {})
        content = answer.get("content") or [{}]
        return str(content[0].get("text", "")), int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
