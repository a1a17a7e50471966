"""Request body caps, enforced while the body streams in (chunked uploads have no Content-Length): bytes, and the
parts of a multipart body — counted before the form parser sees them, so a body of too many files costs the event
loop a byte search, not the parsing of every part."""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_ALLOWANCE = 64 * 1024  # bytes of multipart framing allowed above the file caps
JSON_BODY_MAX = 1024 * 1024  # any other body (JSON requests are a few hundred bytes)


@dataclass(frozen=True)
class BodyCap:
    """The limits of one request's body: `max_bytes` (set by `setting`) and, for a multipart body, `max_parts`
    (set by `parts_setting`; None: not counted)."""

    max_bytes: int
    setting: str
    max_parts: int | None = None
    parts_setting: str = ""


class MultipartPartCounter:
    """Counts the parts of a multipart body as its chunks stream in, however the chunks cut it.

    A part begins at each delimiter `CRLF--boundary` not followed by `--` (that one closes the body); the first
    delimiter may open the body without the CRLF (RFC 2046 §5.1.1, RFC 7578 §4.1). The body's boundary never
    occurs inside a part, so no part's content is miscounted. Memory: the last `len(boundary) + 5` bytes.
    """

    def __init__(self, boundary: bytes):
        self.delimiter = b"\r\n--" + boundary
        self.tail = b"\r\n"  # as if the body began after a line break: its first delimiter counts too
        self.parts = 0

    def feed(self, chunk: bytes) -> int:
        """Count the parts that begin in `chunk` (with the bytes kept from the chunks before). Returns the parts
        begun so far."""
        buf, d = self.tail + chunk, len(self.delimiter)
        i = 0
        while True:
            j = buf.find(self.delimiter, i)
            if j < 0:
                self.tail = buf[max(i, len(buf) - d - 1):]  # a delimiter may be cut by the next chunk
                return self.parts
            if j + d + 2 > len(buf):  # whether it closes the body is in the next chunk
                self.tail = buf[j:]
                return self.parts
            if buf[j + d:j + d + 2] != b"--":
                self.parts += 1
            i = j + d


def multipart_boundary(headers: dict[bytes, bytes]) -> bytes | None:
    """The boundary of a `multipart/form-data` request's Content-Type, or None for any other body."""
    from python_multipart.multipart import parse_options_header  # noqa: PLC0415 - FastAPI's form parser

    ctype, options = parse_options_header(headers.get(b"content-type", b""))
    return options.get(b"boundary") or None if ctype == b"multipart/form-data" else None


class BodyTooLarge(HTTPException):
    """Raised from `receive` as soon as a body passes its cap; FastAPI passes HTTPExceptions through its
    body parsing, so the client gets a 413 `{"detail": …}` and the rest of the body is never read."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


class BodyLimitMiddleware:
    """Caps every request body: from Content-Length before reading, and while it streams — its bytes, and the
    parts of a multipart body (refused as the part past `max_parts` begins, before the form parser reads any part
    of that chunk).

    `cap_for(method, path)` gives the request's `BodyCap`.
    """

    def __init__(self, app: ASGIApp, cap_for: Callable[[str, str], BodyCap]):
        self.app, self.cap_for = app, cap_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = self.cap_for(scope["method"], scope["path"])
        headers = dict(scope["headers"])
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > cap.max_bytes:
            await _send_413(send, f"the request body is {int(length):,} bytes; the limit is {cap.max_bytes:,} "
                                  f"({cap.setting})")
            return
        boundary = multipart_boundary(headers) if cap.max_parts is not None else None
        counter = MultipartPartCounter(boundary) if boundary else None
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                seen += len(chunk)
                if seen > cap.max_bytes:
                    raise BodyTooLarge(f"the request body passed {cap.max_bytes:,} bytes ({cap.setting}); "
                                       "nothing was kept")
                if counter is not None and counter.feed(chunk) > cap.max_parts:  # type: ignore[operator]
                    raise BodyTooLarge(f"the request holds more than {cap.max_parts} files or fields (multipart "
                                       f"parts); the limit is {cap.max_parts} ({cap.parts_setting}); nothing was "
                                       "kept")
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as e:  # raised outside a route's handler (a middleware reading the body)
            if not started:
                await _send_413(send, str(e.detail))


async def _send_413(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class OptionsMiddleware:
    """Answers OPTIONS with every method of the path (`Allow`), where Starlette would answer 405 with the first
    route's only; 404 for an unknown path. `methods_for(path)` gives the path's methods.

    Pure ASGI: other requests pass straight through (Starlette's `@app.middleware("http")` wraps every request in
    a task and memory streams, a cost on each search).
    """

    def __init__(self, app: ASGIApp, methods_for: Callable[[str], set[str]]):
        self.app, self.methods_for = app, methods_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        methods = self.methods_for(scope["path"])
        response = (Response(status_code=204, headers={"Allow": ", ".join(sorted(methods | {"OPTIONS"}))})
                    if methods else JSONResponse({"detail": f"no route {scope['path']}"}, status_code=404))
        await response(scope, receive, send)
