"""Multipart bodies are counted while they stream: a body of too many files is refused as the part past the limit
begins, before the form parser reads it — through the real app's middleware, no service running."""
from __future__ import annotations

import asyncio
import json
import random

import httpx
import pytest

from api.limits import MultipartPartCounter, multipart_boundary


def multipart(n: int, payload: bytes = b"x" * 100) -> tuple[bytes, dict[bytes, bytes]]:
    """A real multipart/form-data body of `n` file parts (httpx's encoder) and its headers."""
    req = httpx.Request("POST", "http://127.0.0.1/api/images",
                        files=[("files", (f"{i}.jpg", payload, "image/jpeg")) for i in range(n)])
    body = req.read()
    return body, {k.lower().encode(): v.encode() for k, v in req.headers.items()}


@pytest.mark.parametrize("n", [1, 2, 200, 201, 500])
def test_parts_are_counted_however_the_chunks_cut_the_body(n):
    # part contents that look like delimiters but are not this body's: no line break before, another boundary
    body, headers = multipart(n, payload=b"--\r\n--x\r\n-- data --" * 5)
    boundary = multipart_boundary(headers)
    assert boundary is not None
    rnd = random.Random(n)
    for cuts in ([len(body)], [1] * len(body), [rnd.randint(1, 97) for _ in range(len(body))]):
        counter, i = MultipartPartCounter(boundary), 0
        for size in cuts:
            counter.feed(body[i:i + size])
            i += size
            if i >= len(body):
                break
        assert counter.parts == n, (n, cuts[:3])


def test_only_multipart_form_data_has_a_boundary():
    assert multipart_boundary({b"content-type": b"application/json"}) is None
    assert multipart_boundary({}) is None
    assert multipart_boundary({b"content-type": b'multipart/form-data; boundary="a b"'}) == b"a b"


def _asgi_upload(app, headers: dict[bytes, bytes], messages: list[bytes]) -> tuple[int, dict, int]:
    """POST /api/images through `app` as an ASGI server would, one body message per item of `messages`.
    Returns (status, JSON body, messages the app read)."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/images", "raw_path": b"/api/images", "query_string": b"",
             "root_path": "", "headers": [(k, v) for k, v in headers.items() if k != b"content-length"],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}
    read = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal read
        read += 1
        if read > len(messages):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": messages[read - 1], "more_body": read < len(messages)}

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, json.loads(body), read


def test_a_500_part_upload_is_refused_before_its_201st_part_is_read():
    from api.main import create_app
    from clip_embedder.config import Settings

    app = create_app(Settings(_env_file=None, api_keys=["k"], max_files_per_upload=200))
    body, headers = multipart(500)
    boundary = multipart_boundary(headers)
    assert boundary is not None
    # one message per part, as a slow client would send them (chunked: no Content-Length)
    starts = [i for i in range(len(body)) if body.startswith(b"--" + boundary, i)]
    messages = [body[a:b] for a, b in zip(starts, starts[1:] + [len(body)])]
    assert len(messages) == 501  # 500 parts and the closing delimiter
    status, answer, read = _asgi_upload(app, headers, messages)
    assert status == 413 and "more than 200 files" in answer["detail"] and "MAX_FILES_PER_UPLOAD" in answer["detail"]
    assert read == 201, read  # the message that begins the 201st part is the last one read
