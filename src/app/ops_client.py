"""HTTP calls of the operator commands (`lmcache ping|describe|kvcache|quota`), per wire-protocol.md §7.2.

Every failure becomes one `OpsError` whose message is a single line for stderr: the server could not be
reached, did not answer in time, answered an error status, or answered something that is not JSON.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ("DEFAULT_SALT", "OpsClient", "OpsError", "check_url", "salt_path")

DEFAULT_SALT = "_default"
_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")


class OpsError(Exception):
    """A one-line reason the command failed; `status` and `detail` are set when the server answered."""

    def __init__(self, message: str, status: int | None = None, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


def check_url(url: str) -> str:
    """The URL without a trailing slash; ValueError (naming the problem) unless it is http(s)://host[:port]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected http://HOST[:PORT] or https://HOST[:PORT], got {url!r}")
    try:
        _ = parts.port  # ValueError for a port that is not a number or out of range
    except ValueError as exc:
        raise ValueError(f"bad port in {url!r} ({exc})") from None
    return url.rstrip("/")


def salt_path(salt: str) -> str:
    """`/quota/{salt}` with the salt escaped; the empty salt is spelled `_default` (§7.2)."""
    return "/quota/" + quote(salt or DEFAULT_SALT, safe="")


def _reason(exc: Exception) -> str:
    """`connection refused` from `[Errno 111] Connection refused`: the OS words, not the exception's."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = _ERRNO.sub("", text)
    return text[:1].lower() + text[1:]


def _error_message(reply: httpx.Response) -> str:
    """The server's own words for an error: `detail` (validation), `error` (quota, 503) or `reason`."""
    try:
        body = reply.json()
    except ValueError:
        return " ".join(reply.text.split())[:200]
    if not isinstance(body, dict):
        return " ".join(str(body).split())[:200]
    message = next((str(body[k]) for k in ("detail", "error", "reason", "message") if body.get(k)), "")
    extra = body.get("extra")
    if isinstance(extra, list):  # Litestar's validation errors name the field here
        details = [
            f"{e.get('key', '')}: {e.get('message', '')}".strip(": ") for e in extra if isinstance(e, dict)
        ]
        message = "; ".join(filter(None, [message, *details]))
    return " ".join(message.split()) or reply.reason_phrase


class OpsClient:
    """A short-lived client of one server's HTTP frontend."""

    def __init__(
        self,
        url: str,
        timeout_s: float,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.Client(base_url=url, timeout=timeout_s, transport=transport, headers=headers)

    def __enter__(self) -> OpsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Send one request; the decoded JSON answer, or OpsError with a one-line reason."""
        try:
            reply = self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise OpsError(f"{self.url} did not answer {method} {path} within {self.timeout_s:g} s") from None
        except httpx.TransportError as exc:
            raise OpsError(f"cannot reach {self.url}: {_reason(exc)}") from None
        if reply.status_code >= 400:
            detail = _error_message(reply)
            if reply.status_code == 401:
                detail = "this server needs a token: set LMCACHE_HTTP_AUTH_TOKEN to its --http-auth-token"
            raise OpsError(
                f"{method} {path} answered {reply.status_code} {reply.reason_phrase}: {detail}",
                reply.status_code,
                detail,
            )
        try:
            return reply.json()
        except ValueError:
            raise OpsError(f"{method} {path} answered {reply.status_code} without a JSON body") from None

    def healthcheck(self) -> Any:
        """`GET /healthcheck`: 200 `{"status":"healthy"}`; 503 with the reason while not up."""
        return self.call("GET", "/healthcheck")

    def status(self) -> Any:
        """`GET /status`: the fields `describe kvcache` shows."""
        return self.call("GET", "/status")

    def clear_l1(self, force: bool = False) -> Any:
        """`POST /cache/clear` for the L1 tier; LMCache's CLI sends `{"tier":"l1"}`, `force` adds the flag."""
        return self.call("POST", "/cache/clear", {"tier": "l1", "force": True} if force else {"tier": "l1"})

    def quota_set(self, salt: str, limit_gb: float) -> Any:
        """`PUT /quota/{salt}`."""
        return self.call("PUT", salt_path(salt), {"limit_gb": limit_gb})

    def quota_get(self, salt: str) -> Any:
        """`GET /quota/{salt}`."""
        return self.call("GET", salt_path(salt))

    def quota_delete(self, salt: str) -> Any:
        """`DELETE /quota/{salt}`."""
        return self.call("DELETE", salt_path(salt))

    def quota_list(self) -> Any:
        """`GET /quota`."""
        return self.call("GET", "/quota")
