"""Request body caps, enforced while the body streams in (chunked uploads have no Content-Length)."""
from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

MULTIPART_ALLOWANCE = 64 * 1024  # bytes of multipart framing allowed above the file caps
JSON_BODY_MAX = 1024 * 1024  # any other body (JSON requests are a few hundred bytes)


class BodyTooLarge(HTTPException):
    """Raised from `receive` as soon as a body passes its cap; FastAPI passes HTTPExceptions through its
    body parsing, so the client gets a 413 `{"detail": …}` and the rest of the body is never read."""

    def __init__(self, detail: str):
        super().__init__(413, detail)


class BodyLimitMiddleware:
    """Caps every request body: from Content-Length before reading, and byte by byte while it streams.

    `cap_for(method, path)` gives (cap in bytes, the setting that sets it).
    """

    def __init__(self, app: ASGIApp, cap_for: Callable[[str, str], tuple[int, str]]):
        self.app, self.cap_for = app, cap_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap, setting = self.cap_for(scope["method"], scope["path"])
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > cap:
            await _send_413(send, f"the request body is {int(length):,} bytes; the limit is {cap:,} ({setting})")
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    raise BodyTooLarge(f"the request body passed {cap:,} bytes ({setting}); nothing was kept")
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
