"""A heartbeat thread: `ping` every interval, track the server's health, recover after an outage.

A ping without a reply within the interval marks the server unhealthy (lookups then report misses, stores
are dropped and loads fail over to recompute). The first reply after that runs the recovery callback
(the worker re-registers its KV caches); until the callback succeeds the server stays unhealthy. A caller
that learns the server forgot us (a store answered "unknown instance") asks for recovery with
`request_recovery`. While unhealthy it probes every `RECOVERY_PROBE_S` (with that timeout) rather than every
interval, so a restarted server is served again within about a second instead of up to two intervals
(20 s at the default); a healthy server still sees one ping per interval, as wire-protocol.md §5.8 says.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("RECOVERY_PROBE_S", "Heartbeat")

#: Seconds between pings, and their timeout, while the server is unhealthy (capped by the interval).
RECOVERY_PROBE_S = 1.0

logger = logging.getLogger("lmcache.vllm.heartbeat")


class Heartbeat:
    """Pings `ping(timeout_s)` every `interval_s` seconds on a daemon thread once `start()` was called.

    Args:
        ping: Sends one ping and returns when answered within `timeout_s`; raises (e.g. TimeoutError) when
            not.
        interval_s: Seconds between pings of a healthy server, and their timeout.
        on_recover: Called on this thread when the server answers after an outage or when recovery was
            requested; returns False to stay unhealthy and try again at the next ping.
        name: Thread name.
    """

    def __init__(
        self,
        ping: Callable[[float], object],
        interval_s: float,
        on_recover: Callable[[], bool] | None = None,
        name: str = "lmcache-heartbeat",
    ) -> None:
        self._ping = ping
        self.interval_s = interval_s
        self._on_recover = on_recover
        self._healthy = threading.Event()
        self._healthy.set()
        self._recover = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._name = name

    @property
    def healthy(self) -> bool:
        """False from a missed ping until the server answered and recovery succeeded."""
        return self._healthy.is_set()

    @property
    def recovering(self) -> bool:
        """A recovery is due or failed and will be retried."""
        return self._recover

    @property
    def started(self) -> bool:
        """Whether the thread runs."""
        return self._thread is not None

    def start(self) -> None:
        """Start pinging (idempotent)."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def request_recovery(self) -> None:
        """Run the recovery callback soon (the server forgot us without missing a ping)."""
        self._recover = True
        self._wake.set()
        self.start()

    def mark_unhealthy(self) -> None:
        """A call found the server unreachable; the next answered ping recovers."""
        if self._healthy.is_set():
            logger.warning("LMCache server unreachable; serving without it until it answers again")
        self._healthy.clear()
        self._wake.set()
        self.start()

    @property
    def _period_s(self) -> float:
        """Ping timeout and pause of the current state: the interval, or the faster probe when unhealthy."""
        if self._healthy.is_set() and not self._recover:
            return self.interval_s
        return min(self.interval_s, RECOVERY_PROBE_S)

    def beat(self) -> bool:
        """One ping (and recovery when due); returns the health afterwards. The thread calls this."""
        try:
            self._ping(self._period_s)
        except Exception as exc:
            if self._healthy.is_set():
                logger.warning("LMCache server did not answer a heartbeat (%s); marking it unhealthy", exc)
            self._healthy.clear()
            return False
        if self._healthy.is_set() and not self._recover:
            return True
        self._recover = False
        recovered = True
        if self._on_recover is not None:
            try:
                recovered = self._on_recover()
            except Exception:
                logger.exception("Recovery after a server outage failed; retrying at the next heartbeat")
                recovered = False
        if recovered:
            if not self._healthy.is_set():
                logger.info("LMCache server answers again")
            self._healthy.set()
        else:
            self._recover = True
            self._healthy.clear()
        return recovered

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._wake.wait(self._period_s)
            self._wake.clear()

    def stop(self) -> None:
        """Stop the thread (waits up to one interval)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.interval_s + 1.0)
