"""The operator commands against an in-test stub that answers the shapes of wire-protocol.md §7.2.

The stub is an httpx.MockTransport behind the real parser and client; the unreachable and timeout cases use
real loopback sockets. tests/integration/http/test_ops_cli.py runs the same commands against a real server.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lmcache.app.cli import build_parser, main
from lmcache.app.ops_cli import EXIT_FAILURE, run_ops
from tests.unit.ops_stub import STATUS, URL, Stub

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def stub() -> Stub:
    return Stub()


def _run(stub: Stub, *argv: str) -> int:
    args = build_parser().parse_args([*argv, "--url", URL])
    return run_ops(args, transport=httpx.MockTransport(stub))


def _out(capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    captured = capsys.readouterr()
    return captured.out, captured.err


# --- ping ------------------------------------------------------------------------------------------------


def test_ping_terminal(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(stub, "ping", "kvcache") == 0
    out, err = _out(capsys)
    assert out.startswith(f"kvcache at {URL}: healthy (") and err == ""
    assert stub.requests == [("GET", "/healthcheck", None)]


def test_ping_json(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(stub, "ping", "kvcache", "--format", "json") == 0
    assert json.loads(_out(capsys)[0]) == {"status": "healthy"}


def test_ping_unhealthy_exits_1_with_the_reason(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.healthy = False
    for fmt in ("terminal", "json"):
        assert _run(stub, "ping", "kvcache", "--format", fmt) == EXIT_FAILURE
        out, err = _out(capsys)
        assert out == ""
        assert err == f"lmcache: kvcache at {URL} is unhealthy: engine not started\n"


# --- describe --------------------------------------------------------------------------------------------


def test_describe_terminal_shows_every_section(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(stub, "describe", "kvcache") == 0
    out = _out(capsys)[0]
    assert stub.requests == [("GET", "/status", None)]
    for expected in (
        "healthy",
        "MPCacheServer",
        "256",
        "blake3",
        "12.00 MiB of 1.00 GiB (1.2%)",
        "48",
        "3 read-locked objects (5 locks), 1 write-locked",
        "LRU",
        "0.8",
        "fs",
        "3.00 MiB of 6.00 MiB (50.0%), 7 objects",
        "circuit_breaker=closed",
        "resp",
        "unhealthy",
        "test-model",
        "1000",
        "1024",
        "131072",
        "1.25s ago",
    ):
        assert expected in out, (expected, out)


def test_describe_json_is_the_servers_answer(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(stub, "describe", "kvcache", "--format", "json") == 0
    assert json.loads(_out(capsys)[0]) == STATUS


def test_describe_tolerates_missing_fields(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.status = {"is_healthy": False}
    assert _run(stub, "describe", "kvcache") == 0
    out = _out(capsys)[0]
    assert "unhealthy" in out
    assert "- of - (-)" in out
    assert "L2 adapters: none" in out and "Registered workers: none" in out


def test_describe_reads_lmcache_056_tagged_controllers(
    stub: Stub, capsys: pytest.CaptureFixture[str]
) -> None:
    """0.5.6 keys its L1 managers and eviction controllers by tag; the first one is shown."""
    manager = stub.status["storage_manager"]
    manager["l1_managers"] = {"default": manager.pop("l1_manager")}
    manager["l1_eviction_controllers"] = {"default": {"eviction_policy": "IsolatedLRU"}}
    del manager["eviction_controller"]
    assert _run(stub, "describe", "kvcache") == 0
    out = _out(capsys)[0]
    assert "IsolatedLRU" in out and "12.00 MiB of 1.00 GiB" in out


# --- kvcache clear ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["terminal", "json"])
def test_kvcache_clear(stub: Stub, capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    assert _run(stub, "kvcache", "clear", "--format", fmt) == 0
    assert stub.requests == [("POST", "/cache/clear", {"tier": "l1"})]
    out = _out(capsys)[0]
    if fmt == "json":
        assert json.loads(out) == {"status": "ok", "cleared": {"tier": "l1"}}
    else:
        assert out == f"kvcache at {URL}: cleared tier l1 (ok)\n"


def test_kvcache_clear_force_and_removed_count(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.fail["/cache/clear"] = httpx.Response(
        200, json={"status": "ok", "cleared": {"tier": "l1"}, "force": True, "removed_objects": 5}
    )
    assert _run(stub, "kvcache", "clear", "--force") == 0
    assert stub.requests == [("POST", "/cache/clear", {"tier": "l1", "force": True})]
    assert _out(capsys)[0] == f"kvcache at {URL}: cleared tier l1 (ok, 5 objects removed)\n"


def test_kvcache_clear_says_what_stayed(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.fail["/cache/clear"] = httpx.Response(
        200,
        json={
            "status": "ok",
            "cleared": {"tier": "l1"},
            "force": False,
            "removed_objects": 0,
            "locked_objects": 3,
            "writing_objects": 1,
            "retired_objects": 2,
            "retired_bytes": 524288,
        },
    )
    assert _run(stub, "kvcache", "clear") == 0
    out = _out(capsys)[0]
    assert f"kvcache at {URL}: cleared tier l1 (ok, 0 objects removed)" in out
    assert "3 read-locked objects remain" in out and "--force" in out
    assert "1 objects are being written" in out
    assert "2 removed objects keep their memory (524288 bytes) until their readers let go" in out


# --- quota -----------------------------------------------------------------------------------------------


def test_quota_round_trip_terminal(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    stub.usage_gb["tenant-a"] = 0.5
    assert _run(stub, "quota", "set", "tenant-a", "--limit-gb", "2") == 0
    assert "tenant-a" in (out := _out(capsys)[0]) and "2.000 GiB" in out and "ok" in out
    assert _run(stub, "quota", "get", "tenant-a") == 0
    out = _out(capsys)[0]
    assert "2.000 GiB" in out and "0.500 GiB (25.0%)" in out and "yes" in out
    assert _run(stub, "quota", "list") == 0
    out = _out(capsys)[0]
    assert "tenant-a" in out and "2.000 GiB" in out and "0.500 GiB" in out
    assert _run(stub, "quota", "delete", "tenant-a") == 0
    assert _out(capsys)[0] == "Quota for cache salt tenant-a: removed\n"
    assert _run(stub, "quota", "delete", "tenant-a") == 0
    assert _out(capsys)[0] == "No quota for cache salt tenant-a; nothing removed.\n"
    assert _run(stub, "quota", "list") == 0
    assert _out(capsys)[0] == "No quotas set.\n"
    assert [(m, p) for m, p, _ in stub.requests] == [
        ("PUT", "/quota/tenant-a"),
        ("GET", "/quota/tenant-a"),
        ("GET", "/quota"),
        ("DELETE", "/quota/tenant-a"),
        ("DELETE", "/quota/tenant-a"),
        ("GET", "/quota"),
    ]
    assert stub.requests[0][2] == {"limit_gb": 2.0}


def test_quota_round_trip_json(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    def run(*argv: str) -> Any:
        assert _run(stub, "quota", *argv, "--format", "json") == 0
        return json.loads(_out(capsys)[0])

    assert run("set", "t", "--limit-gb", "1.5") == {"cache_salt": "t", "limit_gb": 1.5, "status": "ok"}
    assert run("get", "t") == {"cache_salt": "t", "limit_gb": 1.5, "current_usage_gb": 0.0, "exists": True}
    assert run("list") == {"users": {"t": {"limit_gb": 1.5, "current_usage_gb": 0.0}}}
    assert run("delete", "t") == {"cache_salt": "t", "status": "removed"}
    assert run("get", "t")["exists"] is False


def test_quota_salts_are_escaped_and_empty_is_default(stub: Stub, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(stub, "quota", "get", "a/b c[red]") == 0
    assert _run(stub, "quota", "set", "", "--limit-gb", "0") == 0
    assert [p for _, p, _ in stub.requests] == ["/quota/a%2Fb%20c%5Bred%5D", "/quota/_default"]
    assert "a/b c[red]" in _out(capsys)[0]  # printed literally, not taken as rich markup


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "lots"])
def test_quota_set_rejects_bad_limits_before_sending(
    stub: Stub, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(stub, "quota", "set", "t", "--limit-gb", value)
    assert exit_info.value.code == 2
    assert "argument --limit-gb" in _out(capsys)[1]
    assert stub.requests == []


# --- failures --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "path", "reply", "message"),
    [
        (
            ["kvcache", "clear"],
            "/cache/clear",
            httpx.Response(400, json={"detail": "tier: only 'l1' can be cleared"}),
            "POST /cache/clear answered 400 Bad Request: tier: only 'l1' can be cleared",
        ),
        (
            ["describe", "kvcache"],
            "/status",
            httpx.Response(404, json={"status_code": 404, "detail": "Not Found"}),
            "GET /status answered 404 Not Found: Not Found",
        ),
        (
            ["quota", "list"],
            "/quota",
            httpx.Response(503, json={"error": "engine not initialized"}),
            "GET /quota answered 503 Service Unavailable: engine not initialized",
        ),
        (
            ["quota", "set", "t", "--limit-gb", "1"],
            "/quota/t",
            httpx.Response(
                400,
                json={
                    "status_code": 400,
                    "detail": "Validation failed for PUT /quota/t",
                    "extra": [{"message": "Input should be a valid number", "key": "limit_gb"}],
                },
            ),
            "PUT /quota/t answered 400 Bad Request: Validation failed for PUT /quota/t; "
            "limit_gb: Input should be a valid number",
        ),
        (
            ["describe", "kvcache"],
            "/status",
            httpx.Response(200, text="<html>not json</html>"),
            "GET /status answered 200 without a JSON body",
        ),
        (
            ["ping", "kvcache"],
            "/healthcheck",
            httpx.Response(500, text="Internal\nServer Error"),
            "GET /healthcheck answered 500 Internal Server Error: Internal Server Error",
        ),
    ],
)
@pytest.mark.parametrize("fmt", ["terminal", "json"])
def test_error_answers_exit_1_with_one_line(
    stub: Stub,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    path: str,
    reply: httpx.Response,
    message: str,
    fmt: str,
) -> None:
    stub.fail[path] = reply
    assert _run(stub, *argv, "--format", fmt) == EXIT_FAILURE
    out, err = _out(capsys)
    assert out == ""
    assert err == f"lmcache: {message}\n"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "argv",
    [
        ["ping", "kvcache"],
        ["describe", "kvcache"],
        ["kvcache", "clear"],
        ["quota", "set", "t", "--limit-gb", "1"],
        ["quota", "get", "t"],
        ["quota", "delete", "t"],
        ["quota", "list"],
    ],
)
def test_unreachable_server_exits_1_naming_the_url(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    assert main([*argv, "--url", url, "--format", "json"]) == EXIT_FAILURE
    out, err = _out(capsys)
    assert out == ""
    assert err == f"lmcache: cannot reach {url}: connection refused\n"


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A port that accepts connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_timeout_exits_1(silent_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["describe", "kvcache", "--url", silent_server, "--timeout", "0.2"]) == EXIT_FAILURE
    out, err = _out(capsys)
    assert out == ""
    assert err == f"lmcache: {silent_server} did not answer GET /status within 0.2 s\n"


@pytest.mark.parametrize(
    ("flag", "value", "words"),
    [
        ("--url", "localhost:8080", "expected http://HOST[:PORT]"),
        ("--url", "http://h:99999", "bad port"),
        ("--timeout", "0", "must be a number of seconds > 0"),
        ("--format", "yaml", "invalid choice"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, words: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["ping", "kvcache", flag, value])
    assert exit_info.value.code == 2
    err = _out(capsys)[1]
    assert f"argument {flag}" in err and words in err


@pytest.mark.parametrize(
    "argv", [["ping", "kvcache"], ["describe", "kvcache"], ["kvcache", "clear"], ["quota", "list"]]
)
def test_defaults_are_lmcaches(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.url, args.format) == ("http://localhost:8080", "terminal")


def test_the_cli_does_not_import_torch_or_zmq_to_parse() -> None:
    """The operator commands start in well under a second: the server's heavy imports wait until it runs."""
    code = "import sys, lmcache.app.cli; print(sorted({'torch', 'zmq'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"
