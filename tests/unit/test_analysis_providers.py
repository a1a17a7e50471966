"""The hosted providers against local stand-ins: a fake OpenAI-compatible server on 127.0.0.1 (real HTTP through the
`openai` SDK) and botocore's Stubber for Bedrock. Each asserts the request it got and each error path: a timeout,
429 with Retry-After, malformed JSON (once: retried; twice: 502), an answer violating the schema, a box outside the
image."""
from __future__ import annotations

import base64
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from clip_embedder.analysis.providers import BedrockProvider, OpenAiProvider, ProviderError


def photo(w: int = 640, h: int = 480) -> Image.Image:
    return Image.new("RGB", (w, h), (90, 140, 200))


def completion(content: str, tokens: tuple[int, int] = (120, 30)) -> dict:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "test-model",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": tokens[0], "completion_tokens": tokens[1],
                      "total_tokens": tokens[0] + tokens[1]}}


class FakeOpenAi:
    """A chat-completions server on 127.0.0.1: answers from a script of (status, body, headers, delay) and records
    every request (time, path, headers, JSON body)."""

    def __init__(self):
        self.script: list[tuple[int, dict | str, dict, float]] = []
        self.requests: list[tuple[float, str, dict, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                headers = {k.lower(): v for k, v in self.headers.items()}
                fake.requests.append((time.monotonic(), self.path, headers, body))
                status, answer, headers, delay = fake.script.pop(0) if fake.script else (
                    200, completion('{"description": "a photo"}'), {}, 0.0)
                time.sleep(delay)
                data = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout test)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def then(self, status: int, answer: dict | str, headers: dict | None = None, delay: float = 0.0) -> FakeOpenAi:
        self.script.append((status, answer, headers or {}, delay))
        return self


@pytest.fixture
def fake():
    f = FakeOpenAi()
    yield f
    f.server.shutdown()


def provider(fake: FakeOpenAi, **kw) -> OpenAiProvider:
    return OpenAiProvider(fake.url, "test-model", api_key="sk-test-secret", **{"max_retries": 2, **kw})


def test_openai_request_carries_model_data_url_schema_and_key(fake):
    fake.then(200, completion('{"description": "A blue square."}'))
    fake.then(200, completion(json.dumps({"verdict": "NO", "reasons": []})))
    fake.then(200, completion(json.dumps({"labels": [{"label": "sky", "score": 0.9, "bbox_xyxy": [0, 0, 640, 200]}]}),
                              tokens=(200, 40)))
    a = provider(fake).analyse(photo(), ["describe", "sensitive", "labels"])
    assert a.description == "A blue square." and a.sensitive is not None and a.sensitive.verdict is False
    assert [(lb.label, lb.bbox_xyxy, lb.source) for lb in a.labels] == [("sky", (0, 0, 640, 200), "provider")]
    assert a.usage is not None and (a.usage.input_tokens, a.usage.output_tokens, a.usage.calls) == (440, 100, 3)
    assert a.provider == "openai" and a.model == "test-model"
    _, path, headers, body = fake.requests[0]
    assert path == "/v1/chat/completions" and headers["authorization"] == "Bearer sk-test-secret"
    assert body["model"] == "test-model" and body["temperature"] == 0.2 and body["max_tokens"] == 1024
    text, image = body["messages"][0]["content"]
    assert text["type"] == "text" and "Describe this photo" in text["text"]
    url = image["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size == (640, 480)
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["description"]
    labels_prompt = fake.requests[2][3]["messages"][0]["content"][0]["text"]
    assert "640 x 480 pixels" in labels_prompt  # the model is told the size its boxes are in


def test_openai_429_waits_for_retry_after_then_succeeds(fake):
    fake.then(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})
    fake.then(200, completion('{"description": "ok"}'))
    a = provider(fake).analyse(photo(), ["describe"])
    assert a.description == "ok" and len(fake.requests) == 2
    assert fake.requests[1][0] - fake.requests[0][0] >= 0.95


def test_openai_5xx_past_the_retries_is_a_502_and_429_a_503(fake):
    for _ in range(3):
        fake.then(500, {"error": {"message": "boom"}}, {"Retry-After": "0"})
    with pytest.raises(ProviderError, match="after 3 attempts") as e:
        provider(fake).analyse(photo(), ["describe"])
    assert e.value.status == 502 and len(fake.requests) == 3
    for _ in range(3):
        fake.then(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    with pytest.raises(ProviderError) as e:
        provider(fake).analyse(photo(), ["describe"])
    assert e.value.status == 503


def test_openai_timeout_is_retried_then_a_504(fake):
    fake.then(200, completion('{"description": "late"}'), delay=1.5)
    fake.then(200, completion('{"description": "late"}'), delay=1.5)
    with pytest.raises(ProviderError, match="within 0.5s") as e:
        provider(fake, timeout_s=0.5, max_retries=1).analyse(photo(), ["describe"])
    assert e.value.status == 504 and len(fake.requests) == 2


def test_openai_malformed_json_gets_one_retry(fake, caplog):
    fake.then(200, completion("Sure! Here is the description: a blue"))
    fake.then(200, completion('```json\n{"description": "A blue square."}\n```'))
    assert provider(fake).analyse(photo(), ["describe"]).description == "A blue square."
    fake.then(200, completion("not json"))
    fake.then(200, completion('{"description": '))
    with pytest.raises(ProviderError, match="twice with invalid JSON") as e:
        provider(fake).analyse(photo(), ["describe"])
    assert e.value.status == 502
    assert "not json" in caplog.text  # the raw answer is logged …
    assert "sk-test-secret" not in caplog.text  # … the key never


def test_openai_answer_violating_the_schema_is_refused(fake):
    bad = json.dumps({"labels": [{"score": 0.5, "bbox_xyxy": [1, 2, 3, 4]}]})  # no label
    fake.then(200, completion(bad)).then(200, completion(bad))
    with pytest.raises(ProviderError, match=r"labels schema: labels\.0\.label"):
        provider(fake).analyse(photo(), ["labels"])


def test_boxes_outside_the_image_are_clipped_or_dropped_and_corners_accepted(fake):
    corners = {"TopLeft": {"x": 100, "y": 50}, "TopRight": {"x": 300, "y": 50}, "BottomRight": {"x": 300, "y": 250},
               "BottomLeft": {"x": 100, "y": 250}}
    fake.then(200, completion(json.dumps({"labels": [
        {"label": "cat", "score": 0.9, "bbox_xyxy": [-20, 400, 700, 900]},  # clipped to the image
        {"label": "ghost", "score": 0.5, "bbox_xyxy": [700, 500, 900, 800]},  # wholly outside: dropped
        {"label": "dog", "score": 0.8, "bbox_xyxy": corners}]})))
    a = provider(fake).analyse(photo(), ["labels"])
    assert [(lb.label, lb.bbox_xyxy) for lb in a.labels] == [("cat", (0, 400, 640, 480)), ("dog", (100, 50, 300, 250))]
    assert any("ghost" in w for w in a.warnings)


def test_a_big_image_is_sent_smaller_and_its_boxes_scaled_back(fake):
    fake.then(200, completion(json.dumps({"labels": [{"label": "x", "score": 1, "bbox_xyxy": [0, 0, 784, 392]}]})))
    a = provider(fake).analyse(photo(3136, 1568), ["labels"])
    sent = Image.open(io.BytesIO(base64.b64decode(
        fake.requests[0][3]["messages"][0]["content"][1]["image_url"]["url"].split(",", 1)[1])))
    assert sent.size == (1568, 784)
    assert a.labels[0].bbox_xyxy == (0, 0, 1568, 784) and a.image.width == 3136


def test_openai_refused_key_says_what_to_check(fake):
    fake.then(401, {"error": {"message": "invalid api key"}})
    with pytest.raises(ProviderError, match="ANALYSIS_API_KEY") as e:
        provider(fake).analyse(photo(), ["describe"])
    assert e.value.status == 502 and len(fake.requests) == 1  # a 4xx is not retried


# --- Bedrock through botocore's Stubber ---------------------------------------------------------------------------
def bedrock(**kw):
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="AKIDTEST",
                          aws_secret_access_key="secret")
    return BedrockProvider("anthropic.claude-3-haiku-20240307-v1:0", client=client, **kw), Stubber(client)


def claude(text: str, tokens: tuple[int, int] = (1500, 60)) -> dict:
    from botocore.response import StreamingBody

    data = json.dumps({"id": "msg_1", "type": "message", "role": "assistant", "content": [{"type": "text",
                                                                                           "text": text}],
                       "usage": {"input_tokens": tokens[0], "output_tokens": tokens[1]}}).encode()
    return {"body": StreamingBody(io.BytesIO(data), len(data)), "contentType": "application/json"}


def test_bedrock_sends_anthropic_messages_body_and_reads_content_text():
    from botocore.stub import ANY

    p, stub = bedrock()
    sent = []

    class Body:  # records the body the stub is given
        def __eq__(self, other):
            sent.append(json.loads(other))
            return True

    anything = {"modelId": ANY, "body": ANY, "contentType": ANY, "accept": ANY}
    stub.add_response("invoke_model", claude('{"description": "A blue square."}'), anything)
    stub.add_response("invoke_model", claude(json.dumps({"verdict": "YES", "reasons": [
        {"category": "face", "score": 0.9, "evidence": "a face", "bbox_xyxy": [10, 10, 100, 120]}]})),
        {"modelId": "anthropic.claude-3-haiku-20240307-v1:0", "body": Body(), "contentType": "application/json",
         "accept": "application/json"})
    with stub:
        a = p.analyse(photo(), ["describe", "sensitive"])
    stub.assert_no_pending_responses()
    assert a.description == "A blue square." and a.sensitive is not None and a.sensitive.verdict is True
    assert a.sensitive.reasons[0].category == "face" and a.sensitive.reasons[0].bbox_xyxy == (10, 10, 100, 120)
    assert a.usage is not None and (a.usage.input_tokens, a.usage.output_tokens) == (3000, 120)
    body = sent[0]
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["temperature"] == 0.2
    image, text = body["messages"][0]["content"]
    assert image["type"] == "image" and image["source"]["type"] == "base64"
    assert image["source"]["media_type"] == "image/jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(image["source"]["data"]))).size == (640, 480)
    assert text["type"] == "text" and "sensitive information" in text["text"]


def test_bedrock_throttling_is_retried_after_retry_after_and_bad_json_twice_is_a_502():
    p, stub = bedrock(max_retries=2)
    stub.add_client_error("invoke_model", "ThrottlingException", "Too many requests", 429,
                          response_meta={"HTTPHeaders": {"retry-after": "1"}})
    stub.add_response("invoke_model", claude('{"description": "ok"}'))
    t = time.monotonic()
    with stub:
        assert p.analyse(photo(), ["describe"]).description == "ok"
    assert time.monotonic() - t >= 0.95
    stub.add_response("invoke_model", claude("I cannot help with that."))
    stub.add_response("invoke_model", claude("{'description': 'single quotes'}"))
    with stub, pytest.raises(ProviderError, match="twice with invalid JSON") as e:
        p.analyse(photo(), ["describe"])
    assert e.value.status == 502


def test_bedrock_access_denied_is_not_retried():
    p, stub = bedrock()
    stub.add_client_error("invoke_model", "AccessDeniedException", "no access to this model", 403)
    with stub, pytest.raises(ProviderError, match="AWS credentials"):
        p.analyse(photo(), ["describe"])
    stub.assert_no_pending_responses()
