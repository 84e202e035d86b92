"""No flag of the spec is silently ineffective: each one acts, or the server warns that it does not, and why.

For every flag of configuration-reference.md and server-command.md (`test_spec_flags.SERVER_FLAGS`) a server
is started in-process with that flag on top of the same base flags, and one observation of its behaviour
(its `/status`, its sockets and files, the objects its flags configured) is compared with a server
started without it. The flag passes when the observation changed and it logged no "has no effect"
warning, or when it logged exactly one such warning naming it. Flags with nothing to observe on this
machine (runtime plugins, traces, the periodic notifier, lazy pinning without CUDA, ...) must warn.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from lmcache.adapters.memory.shm import shm_pool_name
from lmcache.adapters.transport.client import LMCacheClient
from lmcache.app.config import ConfigError, ServerConfig, load_config
from lmcache.app.container import ServerContainer
from lmcache.app.l1_medium import L1MemoryError
from lmcache.app.runtime import ServerRuntime
from tests.integration.server.conftest import Engine, free_ports
from tests.unit.config_helpers import parse_flags
from tests.unit.test_spec_flags import SERVER_FLAGS

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NO_EFFECT = "has no effect: "
MOCK_L2 = '{"type": "mock", "max_size_gb": 0.01, "mock_bandwidth_gb": 10}'


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@dataclass
class Probe:
    """A server started in-process (or the error that stopped it) and the warnings it logged."""

    container: ServerContainer
    runtime: ServerRuntime | None
    error: str | None
    warnings: list[str]

    def status(self) -> dict[str, Any]:
        assert self.runtime is not None and self.runtime.http is not None, self.error
        body: dict[str, Any] = httpx.get(f"{self.runtime.http.url}/status", timeout=10).json()
        return body

    def l1(self) -> dict[str, Any]:
        return dict(self.status()["storage_manager"]["l1_manager"])

    def subscribers(self) -> list[str]:
        bus = self.container.event_bus()
        return sorted(type(s).__name__ for s in bus.subscribers) if bus is not None else []

    def endpoint(self) -> str:
        assert self.runtime is not None and self.runtime.server is not None, self.error
        return self.runtime.server.endpoint

    def reap_after_for_a_silent_worker(self) -> float:
        with LMCacheClient(self.endpoint(), 10) as client:
            engine = Engine(client)
            try:
                engine.register()
                return float(self.status()["worker_liveness"]["1000"]["reap_after_seconds"])
            finally:
                client.unregister_kv_cache(1000)
                engine.close()

    def warned(self, flag: str) -> list[str]:
        return [w for w in self.warnings if w.startswith(f"{flag} {NO_EFFECT}")]


@contextlib.contextmanager
def started(argv: list[str]) -> Iterator[Probe]:
    """An in-process server on fresh loopback ports with `argv` after the base flags (later flags win)."""
    zmq_port, http_port, prometheus_port = (str(p) for p in free_ports(3))
    base = ["--l1-size-gb", "0.05", "--eviction-policy", "LRU", "--host", "127.0.0.1", "--port", zmq_port]
    base += ["--http-host", "127.0.0.1", "--http-port", http_port, "--prometheus-port", prometheus_port]
    config = load_config(ServerConfig, flags=parse_flags(ServerConfig, base + argv), env={})
    logger = logging.getLogger("lmcache")
    collect, level = _Collect(), logger.level
    logger.addHandler(collect)
    logger.setLevel(logging.INFO)
    container = ServerContainer(config=config)
    runtime: ServerRuntime | None = None
    error = None
    try:
        try:
            runtime = ServerRuntime(container.graph())  # as `lmcache server` builds it
            runtime.start()
        except (ConfigError, L1MemoryError) as exc:
            error, runtime = str(exc), None
        yield Probe(container, runtime, error, collect.lines)
    finally:
        if runtime is not None:
            runtime.close()
            for sig, handler in runtime._previous_handlers.items():  # start() installed ours
                signal.signal(sig, handler)
            gc.unfreeze()  # start() froze everything alive, this server's objects included
        logger.removeHandler(collect)
        logger.setLevel(level)


@dataclass(frozen=True)
class Case:
    """One spec flag: its arguments, what to observe (None: nothing here, it must warn), and companions.

    Companions are flags it needs to be valid; the baseline server gets them too. `expect` pins the
    observation where the baseline's own value is random (ports).
    """

    argv: tuple[str, ...]
    observe: Callable[[Probe], object] | None = None
    companions: tuple[str, ...] = ()
    expect: object = None


def _pools(p: Probe) -> tuple[int, int]:
    assert p.runtime is not None and p.runtime.server is not None
    return len(p.runtime.server._aff._executors), p.runtime.server._cpu_pool._max_workers


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def _cases(tmp: Path) -> dict[str, Case]:
    shm = f"lmcache_flagtest_{id(tmp) & 0xFFFFFF:x}"
    dax = tmp / "dax.img"
    (port,) = free_ports(1)
    return {
        "--instance-id": Case(("--instance-id", "flag-test"), lambda p: p.status()["instance_id"]),
        "--host": Case(
            ("--host", "127.0.0.2"), lambda p: p.endpoint().split("//")[1].split(":")[0], expect="127.0.0.2"
        ),
        "--port": Case(("--port", str(port)), lambda p: _port(p.endpoint()), expect=port),
        "--chunk-size": Case(("--chunk-size", "128"), lambda p: p.status()["chunk_size"]),
        "--max-workers": Case(("--max-workers", "3"), _pools),
        "--max-gpu-workers": Case(("--max-gpu-workers", "3"), _pools),
        "--max-cpu-workers": Case(("--max-cpu-workers", "3"), _pools),
        "--hash-algorithm": Case(("--hash-algorithm", "sha256_cbor"), lambda p: p.status()["hash_algorithm"]),
        "--engine-type": Case(("--engine-type", "blend"), lambda p: "cb_blend" in p.status()),
        "--supported-transfer-mode": Case(
            ("--supported-transfer-mode", "lmcache_driven"), lambda p: p.l1()["memory_backing"]
        ),
        "--runtime-plugin-locations": Case(
            ("--runtime-plugin-locations", str(tmp / "plugin.py")),
            lambda p: [entry["name"] for entry in p.status()["runtime_plugins"]],
        ),
        "--runtime-plugin-config": Case(("--runtime-plugin-config", '{"plugin.x": 1}')),
        "--script-allowed-imports": Case(("--script-allowed-imports", "json")),
        "--shm-name": Case(("--shm-name", shm), lambda p: (Path("/dev/shm") / shm_pool_name(shm)).exists()),
        "--worker-reap-timeout-seconds": Case(
            ("--worker-reap-timeout-seconds", "0"), lambda p: "worker_reaper" in p.status()["loops"]
        ),
        "--worker-registration-grace-seconds": Case(
            ("--worker-registration-grace-seconds", "7200"), Probe.reap_after_for_a_silent_worker
        ),
        "--enable-segmented-prefix": Case(("--enable-segmented-prefix",)),
        "--lookup-hash-log-dir": Case(
            ("--lookup-hash-log-dir", str(tmp / "hashes")), lambda p: (tmp / "hashes").is_dir()
        ),
        "--lookup-hash-log-rotation-interval": Case(("--lookup-hash-log-rotation-interval", "60")),
        "--lookup-hash-log-rotation-max-size": Case(("--lookup-hash-log-rotation-max-size", "1000000")),
        "--lookup-hash-log-max-files": Case(("--lookup-hash-log-max-files", "3")),
        "--http-host": Case(
            ("--http-host", "127.0.0.3"),
            lambda p: p.runtime.http.url.split("//")[1].split(":")[0],
            expect="127.0.0.3",
        ),
        "--http-port": Case(("--http-port", str(port)), lambda p: _port(p.runtime.http.url), expect=port),
        "--l1-size-gb": Case(("--l1-size-gb", "0.06"), lambda p: p.l1()["memory_total_bytes"]),
        "--l1-use-lazy": Case(
            ("--l1-use-lazy",), lambda p: getattr(p.container.l1_memory(), "pinned_bytes", 0)
        ),
        "--no-l1-use-lazy": Case(
            ("--no-l1-use-lazy",), lambda p: getattr(p.container.l1_memory(), "pinned_bytes", 0)
        ),
        "--l1-init-size-gb": Case(
            ("--l1-init-size-gb", "0.01"), lambda p: getattr(p.container.l1_memory(), "pinned_bytes", 0)
        ),
        "--l1-align-bytes": Case(("--l1-align-bytes", str(1 << 20)), lambda p: p.l1()["memory_total_bytes"]),
        "--l1-devdax-path": Case(
            ("--l1-devdax-path", str(dax)),
            lambda p: p.l1()["memory_backing"],
            companions=("--no-l1-use-lazy", "--shm-name", ""),
        ),
        "--gds-l1-path": Case(("--gds-l1-path", str(tmp)), lambda p: p.error or p.l1()["memory_backing"]),
        "--gds-l1-use-direct-io": Case(("--gds-l1-use-direct-io",)),
        "--no-gds-l1-use-direct-io": Case(("--no-gds-l1-use-direct-io",)),
        "--l1-write-ttl-seconds": Case(
            ("--l1-write-ttl-seconds", "900"), lambda p: p.l1()["write_ttl_seconds"]
        ),
        "--l1-read-ttl-seconds": Case(("--l1-read-ttl-seconds", "60"), lambda p: p.l1()["read_ttl_seconds"]),
        "--eviction-policy": Case(
            ("--eviction-policy", "IsolatedLRU"),
            lambda p: p.status()["storage_manager"]["eviction_controller"]["eviction_policy"],
        ),
        "--eviction-trigger-watermark": Case(
            ("--eviction-trigger-watermark", "0.5"),
            lambda p: p.status()["storage_manager"]["eviction_controller"]["trigger_watermark"],
        ),
        "--eviction-ratio": Case(
            ("--eviction-ratio", "0.5"),
            lambda p: p.status()["storage_manager"]["eviction_controller"]["eviction_ratio"],
        ),
        # Without an L2 the L2 policies act on nothing (their effect with one: tests/integration/l2).
        "--l2-store-policy": Case(("--l2-store-policy", "skip_l1")),
        "--l2-prefetch-policy": Case(("--l2-prefetch-policy", "retain")),
        "--l2-prefetch-max-in-flight": Case(("--l2-prefetch-max-in-flight", "2")),
        "--periodic-notifier-interval-ms": Case(("--periodic-notifier-interval-ms", "10")),
        "--l2-adapter": Case(
            ("--l2-adapter", MOCK_L2), lambda p: len(p.status()["storage_manager"]["l2_adapters"])
        ),
        "--disable-observability": Case(("--disable-observability",), Probe.subscribers),
        "--disable-metrics": Case(("--disable-metrics",), Probe.subscribers),
        "--disable-logging": Case(("--disable-logging",), Probe.subscribers),
        "--enable-tracing": Case(
            ("--enable-tracing",), Probe.subscribers, companions=("--otlp-endpoint", "http://127.0.0.1:1")
        ),
        "--event-bus-queue-size": Case(
            ("--event-bus-queue-size", "123"), lambda p: p.container.event_bus().capacity
        ),
        "--otlp-endpoint": Case(("--otlp-endpoint", "http://127.0.0.1:1")),
        "--prometheus-port": Case(
            ("--prometheus-port", str(port)), lambda p: p.container.metrics().port, expect=port
        ),
        "--metrics-sample-rate": Case(
            ("--metrics-sample-rate", "0.5"), lambda p: p.container.metrics().events.sample_rate
        ),
        "--coordinator-url": Case(
            ("--coordinator-url", f"http://127.0.0.1:{port}"),
            lambda p: p.container.coordinator_client() is not None,
        ),
        "--coordinator-advertise-ip": Case(("--coordinator-advertise-ip", "127.0.0.1")),
        "--coordinator-heartbeat-interval": Case(("--coordinator-heartbeat-interval", "2")),
        "--coordinator-l2-event-reporting": Case(("--coordinator-l2-event-reporting",)),
        "--coordinator-l2-event-flush-interval": Case(("--coordinator-l2-event-flush-interval", "2")),
        "--trace-level": Case(
            ("--trace-level", "storage", "--trace-output", str(tmp / "traces")),
            lambda p: p.status()["trace"] is not None,
        ),
        "--trace-output": Case(("--trace-output", str(tmp / "t.lct"))),
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flags")
    with (path / "dax.img").open("wb") as dax:
        dax.truncate(64 << 20)
    (path / "plugin.py").write_text("import time\ntime.sleep(30)\n")  # a long-running runtime plugin
    (path / "traces").mkdir()
    return path


@pytest.mark.parametrize("flag", SERVER_FLAGS)
def test_every_spec_flag_acts_or_warns(flag: str, workdir: Path) -> None:
    cases = _cases(workdir)
    assert flag in cases, f"{flag}: no case; add how to observe it, or make it warn"
    case = cases[flag]
    baseline = None
    if case.observe is not None:
        with started(list(case.companions)) as plain:
            baseline = case.observe(plain)
    with started([*case.companions, *case.argv]) as flagged:
        warned = flagged.warned(flag.replace("--no-", "--", 1))
        observed = case.observe(flagged) if case.observe is not None else None
    assert len(warned) <= 1, warned  # one warning per flag, not one per use
    if case.observe is None:
        assert len(warned) == 1, (
            f"{flag} changes nothing observable here, so it must warn: {flagged.warnings}"
        )
        return
    if case.expect is not None:
        assert observed == case.expect
    changed = observed != baseline
    assert changed or warned, f"{flag}: {observed!r} as without it, and no warning"
    assert not (changed and warned), f"{flag} changed the server ({baseline!r} -> {observed!r}) but warned"
