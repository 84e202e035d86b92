"""The client's blocking path: a timed-out call's late reply never answers the next call."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import msgspec
import pytest
import zmq

from lmcache.adapters.transport.client import LMCacheClient

if TYPE_CHECKING:
    from collections.abc import Iterator


def _slow_then_fast_router(url_holder: list[str], stop: threading.Event, release: threading.Event) -> None:
    """Answers `get_chunk_size` with a counter; requests before `release` wait for the next one."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    url_holder.append(f"tcp://127.0.0.1:{port}")
    held: list[list[bytes]] = []
    answered = 0
    try:
        while not stop.is_set():
            if not sock.poll(20):
                continue
            frames = sock.recv_multipart()
            if not release.is_set():
                held.append(frames)  # only the first call comes before the release
                continue
            for request in [*held, frames]:  # the held request is answered first
                answered += 1
                sock.send_multipart([request[0], request[1], b"", msgspec.msgpack.encode(answered)])
            held.clear()
    finally:
        sock.close(0)


@pytest.fixture
def held_router() -> Iterator[tuple[LMCacheClient, threading.Event]]:
    """A client of `_slow_then_fast_router`, and the router's release event."""
    url: list[str] = []
    stop, release = threading.Event(), threading.Event()
    router = threading.Thread(target=_slow_then_fast_router, args=(url, stop, release), daemon=True)
    router.start()
    while not url:
        threading.Event().wait(0.01)
    client = LMCacheClient(url[0], timeout_s=5.0)
    try:
        yield client, release
    finally:
        client.close()
        stop.set()
        router.join(2)


def test_late_reply_is_dropped_and_calls_from_threads_get_their_own_answers(
    held_router: tuple[LMCacheClient, threading.Event],
) -> None:
    client, release = held_router
    with pytest.raises(TimeoutError, match="get_chunk_size"):
        client.call("get_chunk_size", timeout_s=0.2)
    release.set()  # the held request is answered (1) just before the next one: that call must skip it
    assert client.get_chunk_size() == 2
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(client.get_chunk_size())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert sorted(results) == [3, 4, 5, 6]
    client.close()
    with pytest.raises(RuntimeError, match="closed"):
        client.get_chunk_size()


def test_a_cancelled_async_call_forgets_its_reply_and_the_client_keeps_working(
    held_router: tuple[LMCacheClient, threading.Event],
) -> None:
    client, release = held_router
    pending = client.call_async("get_chunk_size")
    threading.Event().wait(0.2)  # the router holds it
    assert pending.cancel()
    assert client._calls == {}
    release.set()
    assert client.get_chunk_size() == 2  # the held request got 1; its reply reached a forgotten call
    assert client.call_async("get_chunk_size").result(5) == 3  # the I/O thread survived it
