"""`/healthcheck` turns 503 with the reason while a supervised loop is down or the engine is not up.

The frontend is served by its real uvicorn thread (`HttpServer`) over a real Supervisor whose loop is made
to crash; the rest of the server is not needed for this route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lmcache.adapters.http.app import build_http_app
from lmcache.adapters.http.server import HttpServer
from lmcache.adapters.http.services import HttpServices, HttpSettings
from lmcache.domain.supervisor import Supervisor
from tests.fakes.clock import FakeClock
from tests.integration.server.conftest import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator


class Flaky:
    """A loop step that fails while `broken` is set."""

    broken = False

    def step(self) -> None:
        if self.broken:
            raise RuntimeError("disk on fire")


@pytest.fixture
def served() -> Iterator[tuple[str, Supervisor, Flaky, dict[str, Any]]]:
    supervisor = Supervisor(FakeClock())
    flaky = Flaky()
    supervisor.add("eviction", flaky.step, 1.0)
    engine_state: dict[str, Any] = {"problem": None}
    services = HttpServices(
        settings=HttpSettings("id", 256, "blake3", "LRU", "auto", False, ()),
        engine=None,  # type: ignore[arg-type]
        quotas=None,  # type: ignore[arg-type]
        supervisor=supervisor,
        eviction=None,  # type: ignore[arg-type]
        hasher=None,  # type: ignore[arg-type]
        l2_adapters=[],
        l2_types=[],
        run_storage=None,  # type: ignore[arg-type]
        engine_problem=lambda: engine_state["problem"],
    )
    server = HttpServer(build_http_app(services), "127.0.0.1", free_port())
    server.start()
    try:
        yield server.url, supervisor, flaky, engine_state
    finally:
        server.stop()
    assert not server.alive


def test_a_crashed_loop_makes_the_server_unhealthy_until_it_recovers(
    served: tuple[str, Supervisor, Flaky, dict[str, Any]],
) -> None:
    url, supervisor, flaky, _ = served
    assert httpx.get(f"{url}/healthcheck").json() == {"status": "healthy"}
    flaky.broken = True
    assert supervisor.run_once("eviction") is False
    reply = httpx.get(f"{url}/healthcheck")
    assert reply.status_code == 503
    assert reply.json() == {"status": "unhealthy", "reason": "background loop(s) down: eviction"}
    threads = httpx.get(f"{url}/threads").json()["loops"]["eviction"]
    assert threads["alive"] is False and "disk on fire" in threads["last_error"]
    flaky.broken = False
    assert supervisor.run_once("eviction") is True
    assert httpx.get(f"{url}/healthcheck").status_code == 200


def test_an_engine_that_is_not_up_is_unhealthy(served: tuple[str, Supervisor, Flaky, dict[str, Any]]) -> None:
    url, _, _, engine_state = served
    engine_state["problem"] = "the ZMQ server is not running"
    reply = httpx.get(f"{url}/healthcheck")
    assert reply.status_code == 503
    assert reply.json()["reason"] == "the ZMQ server is not running"


def test_a_second_frontend_on_a_taken_port_fails_to_start(
    served: tuple[str, Supervisor, Flaky, dict[str, Any]],
) -> None:
    url = served[0]
    port = int(url.rsplit(":", 1)[1])
    other = HttpServer(build_http_app(_bare_services()), "127.0.0.1", port)
    with pytest.raises(OSError, match="in use"):
        other.start()


def _bare_services() -> HttpServices:
    return HttpServices(
        settings=HttpSettings("id", 256, "blake3", "LRU", "auto", False, ()),
        engine=None,  # type: ignore[arg-type]
        quotas=None,  # type: ignore[arg-type]
        supervisor=Supervisor(FakeClock()),
        eviction=None,  # type: ignore[arg-type]
        hasher=None,  # type: ignore[arg-type]
        l2_adapters=[],
        l2_types=[],
        run_storage=None,  # type: ignore[arg-type]
        engine_problem=lambda: None,
    )
