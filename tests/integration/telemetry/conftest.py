"""Helpers for the telemetry tests: a server with free metrics/HTTP ports and a Prometheus scraper."""

from __future__ import annotations

import time
import urllib.request
from typing import TYPE_CHECKING

from prometheus_client.parser import text_string_to_metric_families

from tests.integration.server.conftest import free_port

if TYPE_CHECKING:
    from collections.abc import Callable

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def port_flags(prometheus_port: int, http_port: int | None = None) -> list[str]:
    """Loopback-only, free ports for the HTTP frontend and the Prometheus endpoint."""
    return [
        "--http-host",
        "127.0.0.1",
        "--http-port",
        str(http_port or free_port()),
        "--prometheus-port",
        str(prometheus_port),
    ]


def scrape(port: int) -> Samples:
    """Every sample the --prometheus-port endpoint (or the HTTP frontend) serves, keyed by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (0 when absent)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(probe: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll until `probe()` holds (events reach the metrics through the bus's drain thread)."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
