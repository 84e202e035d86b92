"""Fleet membership of `lmcache server`: starting and stopping the coordinator client.

The container (`storage_container.py`) builds the client from the `coordinator` section, and its event
forwarder; this module holds the lifecycle steps the runtime calls and the metadata the client sends.

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

if TYPE_CHECKING:
    from lmcache.adapters.coordinator.client import CoordinatorClient

__all__ = ("STOP_TIMEOUT_S", "client_metadata", "start_fleet_membership", "stop_fleet_membership")

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 3.0


def client_metadata(zmq_port: int) -> dict[str, object]:
    """What the server tells the coordinator about itself when it registers."""
    return {"lmcache_version": __version__, "zmq_port": zmq_port}


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
