"""The composition root resolves every provider from the default config and from a full one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from dependency_injector import providers

from lmcache.app.config import ConfigError, CoordinatorConfig, ServerConfig, load_config
from lmcache.app.container import ServerContainer
from lmcache.app.coordinator_container import CoordinatorContainer
from tests.unit.config_helpers import server

if TYPE_CHECKING:
    from pathlib import Path

FULL_PROFILE = """
log_level: DEBUG
mp: {instance_id: node-1, host: 127.0.0.1, port: 6555, chunk_size: 512, max_workers: 4, max_gpu_workers: 2,
     hash_algorithm: sha256_cbor, engine_type: blend, supported_transfer_mode: lmcache_driven,
     runtime_plugin_locations: [/opt/plugins], runtime_plugin_config: {k: v}, script_allowed_imports: [json],
     shm_name: lmcache_pool, worker_reap_timeout_seconds: 60, worker_registration_grace_seconds: 600,
     enable_segmented_prefix: true}
http: {http_host: 127.0.0.1, http_port: 8181}
l1: {l1_size_gb: 8, l1_use_lazy: false, l1_init_size_gb: 2, l1_align_bytes: 8192, l1_write_ttl_seconds: 60,
     l1_read_ttl_seconds: 30, eviction_policy: IsolatedLRU, eviction_trigger_watermark: 0.9,
     eviction_ratio: 0.1}
l2:
  l2_store_policy: skip_l1
  l2_prefetch_policy: retain
  l2_prefetch_max_in_flight: 4
  periodic_notifier_interval_ms: 2
  l2_adapter:
    - {type: raw_block, device_path: /tmp/l2.img, slot_bytes: 8192, io_engine: io_uring}
    - {type: resp, host: 127.0.0.1, port: 6379}
observability: {enable_tracing: true, otlp_endpoint: "http://localhost:4317", metrics_sample_rate: 0.5,
                lookup_hash_log_dir: /tmp/lh, trace_level: storage, trace_output: /tmp/t.lct}
coordinator: {coordinator_url: "http://127.0.0.1:9300", coordinator_advertise_ip: 127.0.0.1,
              coordinator_l2_event_reporting: true, coordinator_l2_event_flush_interval: 0.5}
"""


PROVIDERS = (
    "clock",
    "events",
    "quotas",
    "eviction_policy",
    "arena",
    "l1",
    "eviction_loop",
    "hasher",
    "sessions",
    "l1_memory",
    "l2_adapters",
    "store_controller",
    "prefetch_controller",
    "supervisor",
)


def _resolve_all(container: ServerContainer) -> dict[str, Any]:
    resolved = {name: getattr(container, name)() for name in PROVIDERS}
    resolved["l1_memory"].close()
    return resolved


def test_default_config_resolves() -> None:
    container = ServerContainer(config=server())
    resolved = _resolve_all(container)
    assert type(resolved["eviction_policy"]).__name__ == "LruPolicy"
    assert resolved["l2_adapters"] == []
    assert resolved["arena"].stats().total_bytes == 1 << 30
    assert resolved["l1"].arena is resolved["arena"]
    assert resolved["hasher"].chunk_size == 256


@pytest.mark.parametrize(
    ("policy", "cls"), [("LRU", "LruPolicy"), ("IsolatedLRU", "IsolatedLruPolicy"), ("noop", "NoopPolicy")]
)
def test_eviction_policy_selector(policy: str, cls: str) -> None:
    container = ServerContainer(config=server(["--eviction-policy", policy]))
    assert type(container.eviction_policy()).__name__ == cls


def test_full_config_resolves_with_adapters_swapped(tmp_path: Path) -> None:
    profile = tmp_path / "full.yaml"
    profile.write_text(FULL_PROFILE)
    config = load_config(ServerConfig, profiles=[profile])
    assert config.mp.max_cpu_workers == 4 and config.mp.max_gpu_workers == 2
    container = ServerContainer(config=config)
    with pytest.raises(
        ConfigError, match=r"--l2-adapter #1 \(type 'raw_block'\): .*'io_uring' is not available"
    ):
        container.l2_adapters()
    with container.l2_adapters.override(providers.Object([])):
        resolved = _resolve_all(container)
    assert resolved["hasher"].algorithm == "sha256_cbor"
    assert resolved["arena"].stats().total_bytes == 8 << 30
    assert resolved["eviction_loop"].eviction_ratio == 0.1
    assert type(resolved["eviction_policy"]).__name__ == "IsolatedLruPolicy"


def test_container_rejects_wrong_config_type() -> None:
    container = ServerContainer(config=load_config(CoordinatorConfig))
    with pytest.raises(Exception, match="ServerConfig"):
        container.config()


def test_coordinator_container() -> None:
    container = CoordinatorContainer(config=load_config(CoordinatorConfig))
    assert container.config().port == 9300


def test_the_hasher_gets_pythonhashseed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmcache.domain.hashing import TokenHasher

    monkeypatch.setenv("PYTHONHASHSEED", "4242")
    container = ServerContainer(config=server(["--hash-algorithm", "sha256_cbor"]))
    assert container.hasher().none_hash == TokenHasher(256, "sha256_cbor", hash_seed="4242").none_hash


def _with_fake_memory(*argv: str) -> ServerContainer:
    from tests.fakes.l1_memory import FakeL1Memory

    container = ServerContainer(config=server(list(argv)))
    container.l1_memory.override(providers.Object(FakeL1Memory(1 << 20)))
    return container


@pytest.mark.parametrize(("mode", "engine_driven", "lmcache_driven"), [
    ("auto", True, True), ("engine_driven", True, False), ("lmcache_driven", False, True),
])  # fmt: skip
def test_the_transfer_mode_decides_which_services_the_handlers_get(
    mode: str, engine_driven: bool, lmcache_driven: bool
) -> None:
    container = ServerContainer(config=server(["--supported-transfer-mode", mode, "--l1-size-gb", "0.01"]))
    memory = container.l1_memory()
    try:
        service = container.engine_driven()
        assert (service is not None) is engine_driven
        if service is not None:  # the clients map the SHM pool L1 lives in
            assert service.engine is container.engine() and service.pool_name == memory.name
        handlers = container.op_handlers(on_unregister=print)
        assert handlers.engine_driven is service and handlers.lmcache_driven is lmcache_driven
        assert handlers._on_unregister is print
        assert container.op_table(handlers) == handlers.table  # no cb_* ops without --engine-type blend
    finally:
        memory.close()


def test_lookups_run_on_the_socket_thread_only_without_l2_adapters() -> None:
    container = _with_fake_memory()
    inline = container.zmq_server.kwargs["inline_ops"]()
    assert inline == {"query_prefetch_status", "free_lookup_locks", "end_session", "ping", "lookup"}
    mock = '{"type": "mock", "max_size_gb": 0.01, "mock_bandwidth_gb": 10}'
    container = _with_fake_memory("--l2-adapter", mock)
    assert "lookup" not in container.zmq_server.kwargs["inline_ops"]()


def test_the_graph_shares_the_containers_single_instances() -> None:
    container = _with_fake_memory("--instance-id", "node-9")
    graph = container.graph()
    assert graph.l1 is container.l1() and graph.sessions is container.sessions()
    assert graph.telemetry() is container.telemetry() and graph.blend() is None
    services = container.http_services(engine_problem=lambda: None)
    assert services.engine is container.engine() and services.settings.instance_id == "node-9"


def test_blend_is_built_only_for_a_blend_engine_and_hooked_into_the_engine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _with_fake_memory().blend() is None
    container = _with_fake_memory("--engine-type", "blend_legacy")
    blend = container.blend()
    assert blend is not None and blend is container.blend_graph.server()
    assert container.engine().store_listener is container.blend_graph.registrar()
    assert blend.lookups is container.blend_graph.lookups() and blend.fleet is None  # no --coordinator-url
    bus = container.event_bus()
    assert bus is not None and "blend_metrics" in {s.name for s in bus.subscribers}
    assert "--engine-type blend_legacy: the legacy CacheBlend protocol is not implemented" in caplog.text


CALLED_WITH_RUNTIME_ARGUMENTS = {"op_handlers", "op_table", "zmq_server", "http_services", "http_server"}


@pytest.mark.parametrize("blend_and_tracing", [False, True])
def test_every_provider_resolves(tmp_path: Path, blend_and_tracing: bool) -> None:
    """The wiring mypy cannot see (`.provided`, Selectors, the blend sub-container) resolves whole."""
    argv = ["--l1-size-gb", "0.01", "--lookup-hash-log-dir", str(tmp_path / "h")]
    if blend_and_tracing:
        argv += ["--engine-type", "blend", "--trace-level", "storage", "--trace-output", str(tmp_path)]
    container = ServerContainer(config=server(argv))
    try:
        for name, provider in container.providers.items():
            if name not in CALLED_WITH_RUNTIME_ARGUMENTS:
                provider()
        handlers = container.op_handlers(on_unregister=print)
        table = container.op_table(handlers)
        assert (len(table) > len(handlers.table)) is blend_and_tracing  # the cb_* ops
        services = container.http_services(engine_problem=lambda: None)
        assert services.l2_adapters == () and services.status_extras is not None
        assert services.status_extras()["trace"] is not None or not blend_and_tracing
    finally:
        container.l1_memory().close()


@pytest.mark.parametrize(
    ("argv", "threads", "pin"),
    [
        ((), 2, True),
        (("--kv-copy-threads", "1"), 1, True),
        (("--kv-copy-threads", "4", "--no-kv-copy-pin"), 4, False),
    ],
)
def test_the_registrar_splits_copies_over_threads_beside_the_populator(
    argv: tuple[str, ...], threads: int, pin: bool
) -> None:
    container = ServerContainer(config=server(list(argv)))
    try:
        registrar = container.registrar()
        assert registrar.copy_threads == threads
        assert registrar.copy_pin is pin
        assert registrar.copying == container.l1_memory().copying  # the populator stands aside for copies
        assert registrar.is_backed == container.l1_memory().is_backed
    finally:
        container.l1_memory().close()


def test_kv_copy_threads_is_bounded() -> None:
    with pytest.raises(ConfigError, match="--kv-copy-threads"):
        server(["--kv-copy-threads", "0"])


def test_the_engine_is_built_with_the_blend_registrar_as_its_store_listener() -> None:
    assert _with_fake_memory().engine().store_listener is None
    container = _with_fake_memory("--engine-type", "blend")
    engine = container.engine()  # resolved before (and without) the blend server
    assert engine.store_listener is not None and engine.store_listener is container.blend_graph.registrar()
    assert container.blend_graph.lookups().engine is engine
