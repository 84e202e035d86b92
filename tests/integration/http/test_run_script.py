"""`POST /run_script` over real HTTP: refused (404) by default, restricted when the operator enables it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

from tests.integration.http.frontend import detail
from tests.integration.server.conftest import run_server

if TYPE_CHECKING:
    from collections.abc import Iterator

SCRIPT = b"import json\nprint('hello', 6 * 7)\nresult = json.loads('{\"a\": [1, 2]}')\n"


def test_refused_with_an_explanation_by_default() -> None:
    with run_server() as server:
        reply = httpx.post(f"{server.http_url}/run_script", files={"script": ("s.py", SCRIPT)}, timeout=10)
        assert reply.status_code == 404
        assert "--enable-run-script" in detail(reply)
        assert "hello" not in server.log()


@pytest.fixture(scope="module")
def enabled() -> Iterator[httpx.Client]:
    with (
        run_server("--enable-run-script", "--script-allowed-imports", "json", "math") as server,
        httpx.Client(base_url=server.http_url, timeout=30) as http,
    ):
        yield http


def test_enabled_by_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMCACHE_ENABLE_RUN_SCRIPT", "1")
    with run_server("--script-allowed-imports", "json") as server:
        reply = httpx.post(f"{server.http_url}/run_script", json={"script": "result = 1 + 1"}, timeout=10)
        assert reply.status_code == 200, reply.text
        assert reply.json()["result"] == 2


def test_runs_an_allowed_import_and_returns_output_and_result(enabled: httpx.Client) -> None:
    reply = enabled.post("/run_script", files={"script": ("s.py", SCRIPT)})  # LMCache's multipart upload
    assert reply.status_code == 200, reply.text
    assert reply.json() == {"status": "ok", "stdout": "hello 42\n", "result": {"a": [1, 2]}}
    as_json = enabled.post("/run_script", json={"script": "from math import sqrt\nresult = sqrt(16)"})
    assert as_json.json()["result"] == 4.0
    raw = enabled.post("/run_script", content=b"print(len(server.engine.workers.workers()))")
    assert raw.json()["stdout"] == "0\n"  # the server's services are visible as `server`


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("import os", "import of 'os' is not allowed"),
        ("from os import path", "import of 'os' is not allowed"),
        ("import json.decoder as d\nimport subprocess", "import of 'subprocess' is not allowed"),
        ("open('/etc/passwd')", "NameError"),
        ("eval('1')", "NameError"),
        ("__import__('os')", "not allowed"),
        ("raise ValueError('boom')", "ValueError: boom"),
    ],
)
def test_refuses_what_the_restrictions_forbid(enabled: httpx.Client, script: str, expected: str) -> None:
    reply = enabled.post("/run_script", json={"script": script})
    assert reply.status_code == 400
    assert expected in detail(reply)


def test_a_script_past_its_time_limit_is_stopped(enabled: httpx.Client) -> None:
    reply = enabled.post(
        "/run_script", params={"timeout_s": 0.5}, json={"script": "print('start')\nwhile True: pass"}
    )
    assert reply.status_code == 408
    assert "0.5 s limit" in detail(reply)
    assert reply.json()["stdout"] == "start\n"
    ok = enabled.post("/run_script", json={"script": "result = 'next'"})  # the runner is free again
    assert ok.status_code == 200 and ok.json()["result"] == "next"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"json": {"script": ""}}, "script"),
        ({"json": {"code": "x"}}, "script"),
        ({"json": {"script": "def ("}}, "script"),
        ({"content": b"\xff\xfe"}, "script"),
        ({"json": {"script": "x = 1"}, "params": {"timeout_s": 0}}, "timeout_s"),
        ({"json": {"script": "x = 1"}, "params": {"timeout_s": "soon"}}, "timeout_s"),
        ({"json": {"script": "x = 1"}, "params": {"timeout_s": 1e6}}, "timeout_s"),
    ],
)
def test_bad_requests_name_the_field(enabled: httpx.Client, kwargs: dict[str, object], field: str) -> None:
    reply = enabled.post("/run_script", **kwargs)  # type: ignore[arg-type]
    assert reply.status_code == 400
    assert detail(reply).startswith(field)
