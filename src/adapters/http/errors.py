"""Error bodies of the HTTP frontend: `{"detail": "<field>: <why>"}`, 4xx for anything the client sent.

Litestar's own validation errors (a body or query value of the wrong type, malformed JSON) are rewritten
to the same shape, naming the first bad field, with Litestar's per-field list kept under `errors`. An
unexpected exception is logged and answered 500 without its text.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from litestar import MediaType, Response
from litestar.exceptions import HTTPException, ValidationException

if TYPE_CHECKING:
    from litestar import Request

__all__ = ("EXCEPTION_HANDLERS", "bad_request", "http_error")

logger = logging.getLogger("lmcache.http")


def http_error(status_code: int, detail: str) -> HTTPException:
    """An error answer with `{"detail": detail}`."""
    return HTTPException(status_code=status_code, detail=detail)


def bad_request(field: str, message: str, source: str = "body") -> ValidationException:
    """A 400 naming the offending field (`source`: where it was, body, query or path)."""
    return ValidationException(
        detail=f"{field}: {message}", extra=[{"message": message, "key": field, "source": source}]
    )


_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`")


def _validation_detail(exc: ValidationException) -> str:
    extra = exc.extra if isinstance(exc.extra, list) else []
    first = extra[0] if extra and isinstance(extra[0], dict) else None
    if first is None:
        return str(exc.detail)
    key, message = first.get("key"), first.get("message", exc.detail)
    unknown = _UNKNOWN_FIELD.match(str(message))
    if unknown is not None:  # name the field itself: `keys[0].evil: unknown field`
        where = "" if key in (None, "", "data") else f"{key}."
        return f"{where}{unknown.group('name')}: unknown field"
    if key == "data":  # Litestar's name for the whole body
        missing = message in ("'data'", "Missing required parameter")
        return "body: a JSON body is required" if missing else f"body: {message}"
    if exc.detail.startswith(f"{key}: "):
        return str(exc.detail)
    return f"{key}: {message}" if key else str(message)


def _on_validation(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    content: dict[str, Any] = {"detail": _validation_detail(exc)}
    if isinstance(exc.extra, list) and exc.extra:
        content["errors"] = exc.extra
    return Response(content, status_code=400, media_type=MediaType.JSON)


def _on_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    content: dict[str, Any] = {"detail": exc.detail}
    if isinstance(exc.extra, dict):
        content.update(exc.extra)
    return Response(content, status_code=exc.status_code, media_type=MediaType.JSON, headers=exc.headers)


def _on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    logger.exception("HTTP %s %s failed", request.method, request.url.path)
    return Response({"detail": "internal server error"}, status_code=500, media_type=MediaType.JSON)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    ValidationException: _on_validation,
    HTTPException: _on_http,
    Exception: _on_unexpected,
}
