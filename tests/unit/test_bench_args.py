"""`lmcache bench server` flags: the derived `--url`, `--run-id` parsing."""

from __future__ import annotations

import pytest

from lmcache.app.bench_http import http_url
from lmcache.app.cli import build_parser


@pytest.mark.parametrize(
    ("url", "rpc_url", "port", "expected"),
    [
        (None, "tcp://localhost:5555", 8080, "http://localhost:8080"),
        (None, "tcp://10.1.2.3:6555", 9000, "http://10.1.2.3:9000"),
        (None, "tcp://0.0.0.0:5555", 8080, "http://localhost:8080"),
        (None, "tcp://*:5555", 8080, "http://localhost:8080"),
        (None, "tcp://[::1]:5555", 8080, "http://[::1]:8080"),
        (None, "localhost:5555", 8080, "http://localhost:8080"),
        ("http://h:1/", "tcp://localhost:5555", 8080, "http://h:1"),
        ("", "tcp://localhost:5555", 8080, None),
    ],
)
def test_url_defaults_to_the_rpc_host_and_http_port(
    url: str | None, rpc_url: str, port: int, expected: str | None
) -> None:
    assert http_url(url, rpc_url, port) == expected


def test_run_id_is_hex() -> None:
    args = build_parser().parse_args(["bench", "server", "--run-id", "00c0ffee"])
    assert args.run_id == 0xC0FFEE
    assert build_parser().parse_args(["bench", "server"]).run_id is None


@pytest.mark.parametrize("bad", ["xyz", "123456789", "-1"])
def test_bad_run_id_is_refused_naming_the_flag(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["bench", "server", "--run-id", bad])
    assert stop.value.code == 2
    assert "--run-id" in capsys.readouterr().err
