"""An ASGI wrapper in front of the frontend's Litestar app: request-line limits and bearer-token access.

Why a wrapper and not Litestar middleware: it must act before routing (an LMCache 0.5.6 CLI carries the
token in its `--url` path, which is taken off here) and on every request, including ones no route matches.

- A query string longer than `max_query_bytes` is answered 414, whatever the route (uvicorn's own limit on
  a request head is raised to `MAX_HEAD_BYTES`, see server.py, so such requests reach this answer instead
  of having their connection reset).
- With a token (`--http-auth-token`), every route but `open_paths` (`/healthcheck`, `/metrics`) needs
  `Authorization: Bearer <token>`; else 401 with `WWW-Authenticate: Bearer`. A client that cannot send
  headers (LMCache 0.5.6's CLI: `--url` is its only knob) may put the token in the path instead:
  `--url http://host:8080/token/<token>` sends `/token/<token>/cache/clear`, served as `/cache/clear`.
  Tokens are compared in constant time. The path form shows the token to anything that logs URLs; prefer
  the header where the client allows it.
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    ASGIApp = Callable[..., Awaitable[None]]

__all__ = ("MAX_HEAD_BYTES", "MAX_QUERY_BYTES", "OPEN_PATHS", "TOKEN_PREFIX", "HttpGate")

MAX_QUERY_BYTES = 8192
MAX_HEAD_BYTES = 1 << 20
OPEN_PATHS = frozenset({"/healthcheck", "/metrics"})
TOKEN_PREFIX = "/token/"
_AUTH_HINT = "authentication required: send 'Authorization: Bearer <token>' (the server's --http-auth-token)"


async def _answer(
    send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"detail": detail, "error": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class HttpGate:
    """Wraps an ASGI app; see the module docstring.

    Args:
        app: The app behind the gate.
        token: The bearer token; None or "" = no authentication.
        open_paths: Paths served without the token.
        max_query_bytes: Longest query string served.
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        open_paths: frozenset[str] = OPEN_PATHS,
        max_query_bytes: int = MAX_QUERY_BYTES,
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self.open_paths = open_paths
        self.max_query_bytes = max_query_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 414/401 here, or pass the request on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"")
        if len(query) > self.max_query_bytes:
            await _answer(send, 414, f"query string longer than {self.max_query_bytes} bytes ({len(query)})")
            return
        if self._token is not None and not self._admit(scope):
            await _answer(send, 401, _AUTH_HINT, [(b"www-authenticate", b"Bearer")])
            return
        await self.app(scope, receive, send)

    def _admit(self, scope: Scope) -> bool:
        """Whether the request may pass; takes a path token off the path (module docstring)."""
        assert self._token is not None
        path: str = scope["path"]
        if path.startswith(TOKEN_PREFIX):
            given, _, rest = path[len(TOKEN_PREFIX) :].partition("/")
            if not hmac.compare_digest(given.encode(), self._token):
                return False
            scope["path"] = "/" + rest
            raw = scope.get("raw_path")
            if isinstance(raw, bytes) and raw.startswith(TOKEN_PREFIX.encode()):
                cut = raw.find(b"/", len(TOKEN_PREFIX))
                scope["raw_path"] = raw[cut:] if cut >= 0 else b"/"
            return True
        if path in self.open_paths:
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self._token)
        return False
