"""`POST /run_script`: run an operator's script inside the server (off unless `--enable-run-script`).

The script comes as a multipart upload with a `script` part (what LMCache's tools send), as JSON
`{"script": "..."}`, or as the raw request body. It sees the server's services as `server`, may import only
`--script-allowed-imports`, and returns what it printed and its `result` variable. See sandbox.py for
what the restrictions do and do not protect against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio.to_thread
from litestar import MediaType, Request, Response, post
from litestar.datastructures import UploadFile

from lmcache.adapters.http.errors import bad_request, http_error
from lmcache.adapters.http.sandbox import ScriptBusyError, ScriptRunner

if TYPE_CHECKING:
    from litestar.di import NamedDependency
    from litestar.params import FromQuery

    from lmcache.adapters.http.services import HttpServices

__all__ = ("DISABLED_DETAIL", "RUN_SCRIPT_ROUTES")

MAX_SCRIPT_BYTES = 1 << 20
DISABLED_DETAIL = (
    "run_script is disabled on this server: start it with --enable-run-script "
    "(or LMCACHE_ENABLE_RUN_SCRIPT=1) to allow running uploaded scripts"
)


async def _script_text(request: Request[Any, Any, Any]) -> str:
    content_type = request.headers.get("content-type", "")
    raw: Any
    if content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        form = await request.form()
        raw = form.get("script")
        if isinstance(raw, UploadFile):
            raw = await raw.read()
    elif content_type.startswith("application/json"):
        try:
            body = await request.json()
        except Exception:
            raise bad_request("script", "the body is not valid JSON") from None
        raw = body.get("script") if isinstance(body, dict) else None
    else:
        raw = await request.body()
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            raise bad_request("script", "not UTF-8 text") from None
    if not isinstance(raw, str) or not raw.strip():
        raise bad_request("script", "required: a non-empty script (multipart part, JSON field or body)")
    if len(raw) > MAX_SCRIPT_BYTES:
        raise bad_request("script", f"longer than {MAX_SCRIPT_BYTES} characters")
    return raw


@post("/run_script", status_code=200)
async def run_script(
    request: Request[Any, Any, Any],
    services: NamedDependency[HttpServices],
    runner: NamedDependency[ScriptRunner],
    timeout_s: FromQuery[float | None] = None,
) -> Response[dict[str, Any]]:
    """Run the uploaded script; 404 while disabled, 400 when it fails, 408 past its time limit."""
    settings = services.settings
    if not settings.enable_run_script:
        raise http_error(404, DISABLED_DETAIL)
    limit = settings.run_script_timeout_s
    if timeout_s is not None:
        if not 0 < timeout_s <= limit:
            raise bad_request("timeout_s", f"must be in (0, {limit:g}] seconds, got {timeout_s!r}", "query")
        limit = timeout_s
    source = await _script_text(request)
    try:
        outcome = await anyio.to_thread.run_sync(runner.run, source, limit, {"server": services})
    except SyntaxError as exc:
        raise bad_request("script", f"does not compile: {exc.msg} (line {exc.lineno})") from None
    except ScriptBusyError as exc:
        raise http_error(409, str(exc)) from None
    if outcome.error is not None:
        status = 408 if outcome.timed_out else 400
        content = {"detail": f"script failed: {outcome.error}", "stdout": outcome.stdout}
        return Response(content, status_code=status, media_type=MediaType.JSON)
    return Response(
        {"status": "ok", "stdout": outcome.stdout, "result": outcome.result}, media_type=MediaType.JSON
    )


RUN_SCRIPT_ROUTES = (run_script,)
