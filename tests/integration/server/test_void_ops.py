"""A void op (the lookup) run inline is acknowledged before its handler runs.

The acknowledgement is the same bytes whatever the handler does, so it can leave first and the client's
next step overlaps the work; the next request, read by the same socket thread, still runs after it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.ops import _OPS, Op
from lmcache.adapters.transport.server import ZmqServer
from lmcache.adapters.transport.wire_types import CacheKey
from lmcache.domain.kv_events import KVEventLog


def _key(request_id: str) -> CacheKey:
    return CacheKey("m", 1, None, [1, 2, 3], 0, 3, request_id, "", None, 1)


def test_a_void_op_is_acknowledged_before_its_handler_and_ordered_before_the_next_request() -> None:
    release = threading.Event()
    order: list[str] = []

    def lookup(key: CacheKey, tp_size: int) -> None:
        release.wait(10)
        order.append(f"lookup {key.request_id}")

    def query(request_id: str) -> int:
        order.append(f"query {request_id}")
        return 7

    handlers: dict[str, Any] = {"lookup": lookup, "query_prefetch_status": query}
    server = ZmqServer(
        "tcp://127.0.0.1:0",
        handlers,
        "auto",
        KVEventLog(0, 1),
        inline_ops=frozenset({"lookup", "query_prefetch_status"}),
    )
    server.start()
    client = LMCacheClient(server.endpoint, timeout_s=5.0)
    try:
        started = time.monotonic()
        assert client.lookup(_key("r1")) is None  # answered while the handler still waits
        assert time.monotonic() - started < 4.0 and order == []
        answers: list[int | None] = []
        poller = threading.Thread(target=lambda: answers.append(client.query_prefetch_status("r1")))
        poller.start()
        time.sleep(0.2)
        assert answers == []  # the query waits behind the lookup's work
        release.set()
        poller.join(5)
        assert answers == [7] and order == ["lookup r1", "query r1"]
    finally:
        release.set()
        client.close()
        server.stop()


def test_a_failing_void_op_gets_the_same_acknowledgement() -> None:
    def lookup(key: CacheKey, tp_size: int) -> None:
        raise RuntimeError("boom")

    handlers: dict[str, Any] = {"lookup": lookup, "noop": lambda: "OK"}
    server = ZmqServer(
        "tcp://127.0.0.1:0", handlers, "auto", KVEventLog(0, 1), inline_ops=frozenset({"lookup"})
    )
    server.start()
    client = LMCacheClient(server.endpoint, timeout_s=5.0)
    try:
        assert client.lookup(_key("r2")) is None
        assert client.lookup(_key("r3")) is None
        assert client.noop() == "OK"  # read after both handlers ran: their failures are counted by now
        assert server.errors["lookup"] == 2
    finally:
        client.close()
        server.stop()


def test_only_the_lookup_is_void_and_a_void_op_answers_none_on_failure() -> None:
    assert {op.name for op in _OPS if op.void} == {"lookup"}
    with pytest.raises(ValueError, match="void"):
        Op("x", 99, (), 0, "cpu", void=True)
