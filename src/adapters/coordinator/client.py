"""Server side of fleet membership: register with a coordinator, heartbeat, re-register, deregister.

`CoordinatorClient` runs on its own daemon thread with its own asyncio loop and httpx client, so a
coordinator that is down or slow never blocks or crashes the server: `start()` returns at once, the
reporter's `record_*` methods only append to a bounded buffer, and only `stop()` waits (bounded by its
timeout) to deregister. Each heartbeat tick registers when not registered, heartbeats otherwise, and
registers again at once on a 404 (the coordinator restarted or expired us). Failures back off to twice the
interval, and the state (up/down) is logged once per change, not per tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from lmcache.adapters.coordinator.l2_events import L2EventReporter

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ("CoordinatorClient", "outbound_ip")

logger = logging.getLogger(__name__)


def outbound_ip(url: str) -> str:
    """The local address of the interface that routes to `url`'s host (no packet is sent).

    Falls back to 127.0.0.1 when the host cannot be resolved or routed.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


class CoordinatorClient:
    """Membership of one server in a coordinator's fleet, plus optional L2 event reporting.

    Args:
        coordinator_url: Base URL of the coordinator (`--coordinator-url`), e.g. `http://10.0.0.2:9300`.
        instance_id: This server's id (`--instance-id`).
        http_port: This server's HTTP port (`--http-port`), which the coordinator calls back.
        advertise_ip: Address the coordinator reaches us on (`--coordinator-advertise-ip`); None: the
            outbound interface's address towards the coordinator.
        heartbeat_interval_s: Seconds between heartbeats (`--coordinator-heartbeat-interval`).
        l2_event_reporting: Report L2 events (`--coordinator-l2-event-reporting`); `events` is None without.
        l2_event_flush_interval_s: Seconds between event flushes (`--coordinator-l2-event-flush-interval`).
        metadata: Free-form registration metadata.
        p2p_advertised_url: Sent with the registration.
        mq_port: Sent with the registration.
        request_timeout_s: Timeout of each HTTP call to the coordinator.
        max_buffered_events: Bound of the event buffer (oldest dropped beyond it).
    """

    def __init__(
        self,
        coordinator_url: str,
        instance_id: str,
        http_port: int,
        *,
        advertise_ip: str | None = None,
        heartbeat_interval_s: float = 5.0,
        l2_event_reporting: bool = False,
        l2_event_flush_interval_s: float = 1.0,
        metadata: Mapping[str, Any] | None = None,
        p2p_advertised_url: str = "",
        mq_port: int = 0,
        request_timeout_s: float = 2.0,
        max_buffered_events: int = 100_000,
    ) -> None:
        if heartbeat_interval_s <= 0 or l2_event_flush_interval_s <= 0 or request_timeout_s <= 0:
            raise ValueError("intervals and the request timeout must be > 0")
        self.coordinator_url = coordinator_url.rstrip("/")
        self.instance_id = instance_id
        self.http_port = http_port
        self.advertise_ip = advertise_ip
        self.heartbeat_interval_s = heartbeat_interval_s
        self.flush_interval_s = l2_event_flush_interval_s
        self.metadata = dict(metadata or {})
        self.p2p_advertised_url = p2p_advertised_url
        self.mq_port = mq_port
        self.request_timeout_s = request_timeout_s
        self.events: L2EventReporter | None = (
            L2EventReporter(instance_id, max_buffered_events) if l2_event_reporting else None
        )
        self.registrations = 0
        self.heartbeats = 0
        self._registered = False
        self._up: bool | None = None  # last logged state
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()

    @property
    def registered(self) -> bool:
        """True while the coordinator is known to hold our registration."""
        return self._registered

    # -- lifecycle (caller's thread) -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the client thread; returns at once (registration happens in the background)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._thread_main, name="lmcache-coordinator-client", daemon=True
        )
        self._thread.start()
        self._ready.wait(5.0)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Flush events once, deregister, and stop the thread; waits at most about `timeout_s`."""
        thread, loop, stop = self._thread, self._loop, self._stop
        if thread is None:
            return
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop.set)
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("Coordinator client did not stop within %.1f s; leaving it behind", timeout_s)
        self._thread = None

    def _thread_main(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never let the client take the server down
            logger.exception("Coordinator client crashed; fleet membership is off")
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._ready.set()
        async with httpx.AsyncClient(timeout=self.request_timeout_s) as http:
            tasks = [asyncio.create_task(self._heartbeat_loop(http))]
            if self.events is not None:
                tasks.append(asyncio.create_task(self._flush_loop(http, self.events)))
            await self._stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._shutdown(http)

    async def _shutdown(self, http: httpx.AsyncClient) -> None:
        if self.events is not None and self._registered:
            with contextlib.suppress(Exception):
                await self.events.flush(http, self.coordinator_url, max_batches=4)
        try:
            await http.delete(f"{self.coordinator_url}/instances/{self.instance_id}")
            logger.info("Deregistered %s from the coordinator", self.instance_id)
        except httpx.HTTPError as exc:
            logger.info("Could not deregister %s from the coordinator: %r", self.instance_id, exc)
        self._registered = False

    # -- loops (client thread) -----------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        assert self._stop is not None
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel once the event is set
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _heartbeat_loop(self, http: httpx.AsyncClient) -> None:
        assert self._stop is not None
        failures = 0
        while not self._stop.is_set():
            try:
                ok = await self._tick(http)
            except Exception as exc:  # a bug here must not end membership
                logger.exception("Coordinator heartbeat tick failed")
                ok = False
                self._set_up(False, repr(exc))
            failures = 0 if ok else failures + 1
            await self._sleep(self.heartbeat_interval_s * (1 if failures < 2 else 2))

    async def _tick(self, http: httpx.AsyncClient) -> bool:
        try:
            if self._registered:
                response = await http.put(f"{self.coordinator_url}/instances/{self.instance_id}/heartbeat")
                if response.status_code == 404:
                    logger.info("Coordinator does not know %s; registering again", self.instance_id)
                    self._registered = False
                elif response.is_success:
                    self.heartbeats += 1
                    self._set_up(True, "")
                    return True
                else:
                    self._set_up(False, f"heartbeat answered HTTP {response.status_code}")
                    return False
            return await self._register(http)
        except httpx.HTTPError as exc:
            self._set_up(False, repr(exc))
            return False

    async def _register(self, http: httpx.AsyncClient) -> bool:
        if self.advertise_ip is None:
            self.advertise_ip = await asyncio.to_thread(outbound_ip, self.coordinator_url)
        body = {
            "instance_id": self.instance_id,
            "ip": self.advertise_ip,
            "http_port": self.http_port,
            "metadata": self.metadata,
            "p2p_advertised_url": self.p2p_advertised_url,
            "mq_port": self.mq_port,
        }
        response = await http.post(f"{self.coordinator_url}/instances", json=body)
        if not response.is_success:
            self._set_up(False, f"registration answered HTTP {response.status_code}: {response.text[:200]}")
            return False
        self._registered = True
        self.registrations += 1
        self._set_up(True, "")
        return True

    def _set_up(self, up: bool, reason: str) -> None:
        if up and self._up is not True:
            logger.info("Registered with coordinator %s as %s", self.coordinator_url, self.instance_id)
        elif not up and self._up is not False:
            logger.warning(
                "Coordinator %s unreachable (%s); serving on and retrying", self.coordinator_url, reason
            )
        self._up = up

    async def _flush_loop(self, http: httpx.AsyncClient, events: L2EventReporter) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            await self._sleep(self.flush_interval_s)
            if self._registered and not self._stop.is_set():
                try:
                    await events.flush(http, self.coordinator_url)
                except Exception:
                    logger.exception("L2 event flush failed")
