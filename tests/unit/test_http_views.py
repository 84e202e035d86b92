"""Pure pieces of the HTTP frontend: config redaction, block-id parsing, layout shapes, health reasons."""

from __future__ import annotations

import pytest
from litestar.exceptions import ValidationException

from lmcache.adapters.http.config_view import REDACTED, redact_secrets
from lmcache.adapters.http.layout_view import engine_kv_shape
from lmcache.adapters.http.routes_cache import parse_block_ids
from lmcache.domain.kv_layout import TensorSpec, detect_layer


def test_secrets_are_redacted_at_any_depth_and_only_when_set() -> None:
    config = {
        "l2": {"l2_adapter": [{"type": "s3", "aws_secret_access_key": "abc", "bucket": "b"}]},
        "resp": {"password": "pw", "username": "u"},
        "coordinator": {"api_token": None, "url": "http://c"},
    }
    shown = redact_secrets(config)
    assert shown["l2"]["l2_adapter"][0] == {"type": "s3", "aws_secret_access_key": REDACTED, "bucket": "b"}
    assert shown["resp"] == {"password": REDACTED, "username": "u"}
    assert shown["coordinator"] == {"api_token": None, "url": "http://c"}
    assert config["resp"]["password"] == "pw"  # the input is not modified


def test_block_ids_parse_lists_and_ranges() -> None:
    assert parse_block_ids("8-11,20, 22,") == [8, 9, 10, 11, 20, 22]
    assert parse_block_ids("5") == [5]
    for bad in ("3-1", "a", "1-x", "-2", f"0-{1 << 21}"):
        with pytest.raises(ValidationException, match="block_ids"):
            parse_block_ids(bad)


@pytest.mark.parametrize(
    ("shape", "hint", "expected"),
    [
        ((2, 64, 16, 8, 128), "NHD", [2, 64, 16, 8, 128]),
        ((2, 64, 8, 16, 128), "HND", [2, 64, 8, 16, 128]),
        ((64, 2, 16, 8, 128), "NHD", [64, 2, 16, 8, 128]),
        ((64, 16, 576), None, [64, 16, 576]),
        ((64, 16, 8, 256), "NHD", [64, 16, 8, 256]),
    ],
)
def test_engine_shapes_are_rebuilt_from_the_detected_format(
    shape: tuple[int, ...], hint: str | None, expected: list[int]
) -> None:
    stride = tuple(1 for _ in shape)
    geom = detect_layer(TensorSpec("float16", shape, stride), hint, cpu_only=False)
    assert engine_kv_shape(geom) == expected


def test_checksums_gathered_in_small_batches_match_one_gather() -> None:
    import torch

    from lmcache.adapters.transfer.checksums import block_checksums

    layers = [torch.randn(2, 40, 16, 4, dtype=torch.float32) for _ in range(3)]
    ids = [5, 3, 3, 39, *range(10, 30)]
    whole = block_checksums(layers, ids, 4, 1, budget_bytes=1 << 30)
    assert block_checksums(layers, ids, 4, 1, budget_bytes=1) == whole  # one chunk per gather
    assert block_checksums(layers, ids, 4, 1, budget_bytes=3 * 4 * 2 * 16 * 4 * 4) == whole
    assert len(whole) == 6


def test_the_gate_takes_a_path_token_off_and_checks_bearer_tokens() -> None:
    import asyncio
    from typing import Any

    from lmcache.adapters.http.gate import HttpGate

    seen: list[tuple[str, bytes]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["path"], scope["raw_path"]))

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    def call(path: str, raw: bytes, headers: list[tuple[bytes, bytes]] = ()) -> int | None:  # type: ignore[assignment]
        sent.clear()
        scope = {"type": "http", "path": path, "raw_path": raw, "query_string": b"", "headers": headers}
        asyncio.run(HttpGate(app, "t0ken-0123456789abc")(scope, None, send))  # type: ignore[arg-type]
        return sent[0]["status"] if sent else None

    assert call("/token/t0ken-0123456789abc/cache/clear", b"/token/t0ken-0123456789abc/cache/clear") is None
    assert seen[-1] == ("/cache/clear", b"/cache/clear")
    assert call("/token/t0ken-0123456789abc", b"/token/t0ken-0123456789abc") is None and seen[-1][0] == "/"
    assert call("/token/other/cache/clear", b"/token/other/cache/clear") == 401
    assert call("/status", b"/status", [(b"authorization", b"bearer t0ken-0123456789abc")]) is None
    assert call("/status", b"/status", [(b"authorization", b"Basic t0ken-0123456789abc")]) == 401
    assert call("/healthcheck", b"/healthcheck") is None


def test_the_coordinator_sends_the_servers_token() -> None:
    import asyncio

    from lmcache.adapters.coordinator.servers import HttpFleetServers

    servers = HttpFleetServers(1.0, "t0ken-0123456789abc")
    assert servers._http.headers["authorization"] == "Bearer t0ken-0123456789abc"
    asyncio.run(servers._http.aclose())
    assert "authorization" not in HttpFleetServers(1.0)._http.headers
