"""`--disable-logging` on a real server: "Skip logging subscribers" (configuration-reference.md).

The logging subscriber turns storage events into log lines: a WARNING when L1 has no room for an object,
and at DEBUG a line per routine event. With the flag the bus keeps running for its other subscribers (the
metrics still count the same events) and the server's own log is untouched; only the event lines go.
The log is read after the server stopped, since stopping delivers every queued event first.
"""

from __future__ import annotations

import pytest

from tests.integration.server.conftest import READY, Engine, free_port, key, run_server, tokens_for
from tests.integration.telemetry.conftest import port_flags, sample, scrape, wait_for

BLOCKS = list(range(8, 40))
FULL = "L1 is full: no room for an object of 262144 bytes even after eviction"
ROUTINE = "L1WriteCommitted(keys=<2>"


@pytest.mark.parametrize("disabled", [False, True], ids=["default", "disable-logging"])
def test_disable_logging_drops_only_the_event_log_lines(disabled: bool) -> None:
    port = free_port()
    # noop eviction in 8 chunks of L1: the fifth 2-chunk store finds no room (two allocation failures).
    flags = [*port_flags(port), "--eviction-policy", "noop", "--log-level", "DEBUG"]
    flags += ["--disable-logging"] if disabled else []
    with run_server(*flags, l1_gb="0.002") as srv:
        with srv.client() as c:
            engine = Engine(c)
            engine.register()
            for seq in range(5):
                tokens = tokens_for(seq)
                assert c.store(key(tokens, f"s{seq}", end=512), 1000, [BLOCKS], b"")[1]
                c.end_session(f"s{seq}")
            engine.close()
        wait_for(lambda: sample(scrape(port), "lmcache_mp_l1_allocation_failures_total") == 2)
        samples = scrape(port)
    srv.wait_for_log("LMCache cache server stopped")
    log = srv.log()

    subscribers = {
        dict(labels)["subscriber"]
        for name, labels in samples
        if name == "lmcache_mp_event_subscriber_errors_total"
    }
    assert sample(samples, "lmcache_mp_l1_writes_total") == 8  # the bus still feeds the metrics
    assert READY in log and "Stored 512 tokens" in log  # the server's own log lines stay
    if disabled:
        assert subscribers == {"metrics"}
        assert FULL not in log and ROUTINE not in log
    else:
        assert subscribers == {"metrics", "logging"}
        assert log.count(FULL) == 1  # two failures, one line: warnings of a kind are rate-limited
        assert log.count(ROUTINE) == 4
