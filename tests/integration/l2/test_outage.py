"""The backend dies mid-run (redis-server, the S3 server stopped), and rediss:// (TLS).

Misses come within the deadline, the breaker opens, and the adapter recovers once the server is back.
Each test owns its server, on its own loopback port.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.adapters.storage.object_format import key_name
from lmcache.adapters.storage.resilience import CircuitBreaker, ResilientL2Adapter
from lmcache.adapters.system_clock import SystemClock
from tests.integration.l2.conftest import build, resp_spec, s3_spec
from tests.integration.l2.servers import RedisServer, S3Server
from tests.integration.l2.test_contract import empty, key, payload

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

DEADLINE_S = 2.0


def _wrap(adapter: Any) -> ResilientL2Adapter:
    breaker = CircuitBreaker(
        SystemClock(), "outage", failure_threshold=2, base_backoff_s=0.2, max_backoff_s=0.4
    )
    return ResilientL2Adapter(adapter, deadline_s=DEADLINE_S, store_deadline_s=DEADLINE_S, breaker=breaker)


async def _timed(call: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = await call
    return result, time.monotonic() - started


async def _outage_and_recovery(
    adapter: ResilientL2Adapter, stop: Callable[[], None], start: Callable[[], None]
) -> None:
    data = payload(1, 100_000)
    assert await adapter.store([key(1)], [data]) == [True]
    stop()
    for _ in range(3):
        (found, took) = await _timed(adapter.lookup_and_lock([key(1)]))
        assert found == [False] and took < DEADLINE_S + 0.5
        (loaded, took) = await _timed(adapter.load([key(1)], [empty(data.nbytes)]))
        assert loaded == [False] and took < DEADLINE_S + 0.5
        (stored, took) = await _timed(adapter.store([key(2)], [data]))
        assert stored == [False] and took < DEADLINE_S + 0.5
    assert adapter.breaker.state == "open" and adapter.short_circuited > 0
    assert adapter.counters.backend_errors + adapter.deadline_misses >= 2
    start()
    deadline = time.monotonic() + 10
    while (await adapter.store([key(3)], [data])) != [True]:
        assert time.monotonic() < deadline, "no recovery after the server came back"
        await asyncio.sleep(0.1)
    out = empty(data.nbytes)
    assert await adapter.load([key(3)], [out]) == [True] and bytes(out) == bytes(data)
    assert adapter.breaker.state == "closed" and adapter.breaker.transitions["half_open"] >= 1
    await adapter.close()


@pytest.mark.slow
async def test_redis_killed_mid_run(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    try:
        adapter = _wrap(build(resp_spec(server)))
        await _outage_and_recovery(adapter, server.stop, server.start)
    finally:
        server.stop()


@pytest.mark.slow
async def test_s3_server_killed_mid_run() -> None:
    server = S3Server().start()
    try:
        adapter = _wrap(build(s3_spec(server, "outage")))
        await _outage_and_recovery(adapter, server.stop, server.start)
    finally:
        server.stop()


@pytest.mark.slow
async def test_tls_redis_round_trip(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis-tls", tls=True).start()
    try:
        adapter = build(resp_spec(server))
        assert adapter.url.startswith("rediss://")
        data = payload(5, 70_000)
        assert await adapter.store([key(5)], [data]) == [True]
        out = empty(data.nbytes)
        assert await adapter.load([key(5)], [out]) == [True] and bytes(out) == bytes(data)
        assert (await adapter.list_keys()).keys == (key(5),)
        assert server.client().keys("lmcache:*") == [b"lmcache:" + key_name(key(5)).encode()]
        await adapter.close()
    finally:
        server.stop()
