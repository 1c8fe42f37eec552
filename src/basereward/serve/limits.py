"""Request body limit, as ASGI middleware: an oversized body is a 413 before any of it is parsed.

A declared `Content-Length` above the limit is refused without reading; a chunked body is read
up to the limit and refused as soon as it passes it. The app then receives the buffered body,
so no handler ever holds more than `max_bytes` of one request.
"""

from __future__ import annotations

import json


class BodyLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await _reject(send, 400, "invalid Content-Length header")
                return
            if too_big:
                await _reject(send, 413, self._message())
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await _reject(send, 413, self._message())
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        delivered = False

        async def receive_buffered():
            nonlocal delivered
            if not delivered:
                delivered = True
                return replay
            return await receive()  # after the body: wait for the disconnect, as Starlette expects

        await self.app(scope, receive_buffered, send)

    def _message(self) -> str:
        return f"request body larger than {self.max_bytes} bytes (--max-body-mb)"


async def _reject(send, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": payload})
