"""The body limit: a request body is counted as it arrives and refused past `body_bytes_max` (413)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from intake.http.problems import PROBLEM_JSON, Problem


class BodyLimit:
    """Refuses a body over `bytes_max` with 413, from its Content-Length or while it streams in, never
    holding more than `bytes_max` of it; the application then reads the body from memory."""

    def __init__(self, app: ASGIApp, bytes_max: int) -> None:
        self.app = app
        self.bytes_max = bytes_max

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > self.bytes_max):
            await self._refuse(send, declared.decode("latin-1"))
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.bytes_max:
                await self._refuse(send, "more")
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()  # only the disconnect is left

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, size: str) -> None:
        problem = Problem(413, "body-too-large", f"the body may have at most {self.bytes_max} bytes (got {size})")
        content = problem.render()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(content)).encode()),
            (b"connection", b"close")]})  # the rest of the body is not read: the connection cannot be reused
        await send({"type": "http.response.body", "body": content})
