from __future__ import annotations

import pytest

from lmcache.domain.fleet_registry import InstanceRegistry
from tests.fakes.clock import FakeClock


def make(timeout: float = 30.0) -> tuple[InstanceRegistry, FakeClock]:
    clock = FakeClock()
    return InstanceRegistry(clock, timeout, wall=lambda: 1_700_000_000.0), clock


def test_register_assigns_an_id_when_empty_and_reports_re_registration() -> None:
    registry, _ = make()
    assigned, again = registry.register("", "10.0.0.1", 8080)
    assert assigned and not again
    assert registry.register("node-1", "10.0.0.2", 8080) == ("node-1", False)
    assert registry.register("node-1", "10.0.0.3", 8081) == ("node-1", True)
    record = registry.get("node-1")
    assert record is not None and record.http_url == "http://10.0.0.3:8081"
    assert len(registry) == 2


def test_expiry_happens_exactly_at_the_timeout() -> None:
    registry, clock = make(timeout=30)
    registry.register("a", "10.0.0.1", 8080)
    clock.advance(29.999)
    assert registry.expire() == []
    assert [r.instance_id for r in registry.live()] == ["a"]
    clock.advance(0.001)  # now exactly 30 s since the registration
    assert registry.live() == []
    assert registry.expire() == ["a"]
    assert "a" not in registry
    assert registry.heartbeat("a") is False  # the server then registers again


def test_heartbeat_postpones_expiry() -> None:
    registry, clock = make(timeout=10)
    registry.register("a", "10.0.0.1", 8080)
    registry.register("b", "10.0.0.2", 8080)
    clock.advance(6)
    assert registry.heartbeat("a")
    clock.advance(4)
    assert registry.expire() == ["b"]
    clock.advance(5.999)
    assert registry.expire() == []
    clock.advance(0.001)
    assert registry.expire() == ["a"]


def test_deregister_is_idempotent_and_json_has_the_contract_fields() -> None:
    registry, _ = make()
    registry.register("a", "::1", 9000, metadata={"gpu": "h100"}, mq_port=5555)
    record = registry.get("a")
    assert record is not None
    assert record.http_url == "http://[::1]:9000"
    body = record.to_json()
    assert {"instance_id", "ip", "http_port", "registration_time", "last_heartbeat", "metadata"} <= set(body)
    assert body["metadata"] == {"gpu": "h100"} and body["registration_time"] == 1_700_000_000.0
    assert registry.deregister("a") is True
    assert registry.deregister("a") is False


def test_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError):
        InstanceRegistry(FakeClock(), 0)
