"""`--busy-poll-us`: the socket thread polls without sleeping for a while after a request, then blocks.

CPU time is the observable: spinning burns it, blocking does not. Both bounds are loose (a loaded CI
machine can deschedule the spinning thread) but each fails when the window is ignored: never spinning
leaves the first bound unmet, spinning forever breaks the second.
"""

from __future__ import annotations

import time

from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.transport.server import ZmqServer
from lmcache.domain.kv_events import KVEventLog


def _cpu_after_one_request(busy_poll_s: float, idle_s: float) -> float:
    """Process CPU seconds spent while the client sleeps `idle_s` right after a noop."""
    server = ZmqServer(
        "tcp://127.0.0.1:0", {"noop": lambda: "OK"}, "auto", KVEventLog(0, 1), busy_poll_s=busy_poll_s
    )
    server.start()
    client = LMCacheClient(server.endpoint, timeout_s=5.0)
    try:
        assert client.noop() == "OK"
        started = time.process_time()
        time.sleep(idle_s)
        spent = time.process_time() - started
        assert client.noop() == "OK"  # still answering after the window
        return spent
    finally:
        client.close()
        server.stop()


def test_the_socket_thread_spins_for_the_window_and_then_blocks() -> None:
    assert _cpu_after_one_request(0.3, 0.3) > 0.1, "no busy polling after a request"
    assert _cpu_after_one_request(0.05, 1.0) < 0.4, "busy polling did not stop after its window"
    assert _cpu_after_one_request(0.0, 0.5) < 0.1, "--busy-poll-us 0 still spins"
