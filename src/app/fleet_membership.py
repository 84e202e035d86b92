"""Fleet membership of `lmcache server`: the coordinator client built from the `coordinator` section.

With `--coordinator-url` the server registers under its `--instance-id` with its `--http-port` (the port
the coordinator calls back for `DELETE /l2` and `GET /l2/keys`), so the runtime starts the client only
once the HTTP frontend is up, and stops it (flush, deregister) first, while that frontend still answers.
With `--coordinator-l2-event-reporting` the client's reporter also joins the domain's synchronous event
fan-out (not the telemetry bus), so fleet accounting works under `--disable-observability`. The client
runs on its own thread: a coordinator that is down or slow costs start-up nothing and shutdown at most
`STOP_TIMEOUT_S`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lmcache import __version__
from lmcache.adapters.coordinator.client import CoordinatorClient
from lmcache.adapters.coordinator.event_forwarder import CoordinatorEventForwarder

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.app.config import ServerConfig
    from lmcache.ports.events import EventSink

__all__ = (
    "STOP_TIMEOUT_S",
    "build_coordinator_client",
    "start_fleet_membership",
    "stop_fleet_membership",
    "with_coordinator_sink",
)

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 3.0


def build_coordinator_client(config: ServerConfig) -> CoordinatorClient | None:
    """The (not yet started) client for `--coordinator-url`, or None without one."""
    fleet = config.coordinator
    if fleet.coordinator_url is None:
        return None
    return CoordinatorClient(
        fleet.coordinator_url,
        config.mp.instance_id,
        config.http.http_port,
        advertise_ip=fleet.coordinator_advertise_ip,
        heartbeat_interval_s=fleet.coordinator_heartbeat_interval,
        l2_event_reporting=fleet.coordinator_l2_event_reporting,
        l2_event_flush_interval_s=fleet.coordinator_l2_event_flush_interval,
        metadata={"lmcache_version": __version__, "zmq_port": config.mp.port},
    )


def with_coordinator_sink(sinks: Sequence[EventSink], client: CoordinatorClient | None) -> list[EventSink]:
    """`sinks` plus the coordinator's event forwarder when the client reports L2 events."""
    if client is None or client.events is None:
        return list(sinks)
    return [*sinks, CoordinatorEventForwarder(client.events)]


def start_fleet_membership(client: CoordinatorClient | None) -> None:
    """Start registering and heartbeating in the background; returns at once."""
    if client is not None:
        client.start()
        logger.info("Joining the fleet of coordinator %s as %s", client.coordinator_url, client.instance_id)


def stop_fleet_membership(client: CoordinatorClient | None) -> None:
    """Flush pending L2 events and deregister, waiting at most `STOP_TIMEOUT_S`; never raises."""
    if client is None:
        return
    try:
        client.stop(STOP_TIMEOUT_S)
    except Exception:
        logger.exception("Leaving the coordinator's fleet failed")
