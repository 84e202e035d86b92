"""Documented defaults, inherited and generated values, boolean pairs, every L2 type, the shipped profiles."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from lmcache.app.config import ConfigError, CoordinatorConfig, ServerConfig, load_config
from lmcache.app.config.l2 import L2Config
from tests.unit.config_helpers import server

ROOT = Path(__file__).resolve().parents[2]


def test_documented_server_defaults() -> None:
    config = server()
    assert (config.mp.host, config.mp.port, config.mp.chunk_size, config.mp.max_workers) == (
        "localhost",
        5555,
        256,
        1,
    )
    assert (config.mp.hash_algorithm, config.mp.engine_type, config.mp.supported_transfer_mode) == (
        "blake3",
        "default",
        "auto",
    )
    assert (config.http.http_host, config.http.http_port) == ("0.0.0.0", 8080)
    assert (config.l1.l1_use_lazy, config.l1.l1_init_size_gb, config.l1.l1_align_bytes) == (True, 20, 4096)
    assert (config.l1.l1_write_ttl_seconds, config.l1.l1_read_ttl_seconds) == (600, 300)
    assert (config.l1.eviction_trigger_watermark, config.l1.eviction_ratio) == (0.8, 0.2)
    assert (config.l2.l2_store_policy, config.l2.l2_prefetch_policy) == ("default", "default")
    assert (config.l2.l2_prefetch_max_in_flight, config.l2.periodic_notifier_interval_ms) == (8, 5)
    assert config.mp.shm_name is None
    assert (config.mp.worker_reap_timeout_seconds, config.mp.worker_registration_grace_seconds) == (120, 3600)
    obs = config.observability
    assert (obs.event_bus_queue_size, obs.prometheus_port, obs.lookup_hash_log_dir) == (10000, 9090, "")
    assert (obs.lookup_hash_log_rotation_interval, obs.lookup_hash_log_rotation_max_size) == (
        21600,
        104857600,
    )
    assert config.coordinator.coordinator_url is None
    assert config.coordinator.coordinator_heartbeat_interval == 5


def test_documented_coordinator_defaults() -> None:
    config = load_config(CoordinatorConfig)
    assert (config.host, config.port, config.instance_timeout, config.health_check_interval) == (
        "0.0.0.0",
        9300,
        30,
        10,
    )
    assert (config.eviction_check_interval, config.eviction_ratio, config.trigger_watermark) == (5, 0.2, 1.0)
    assert (config.blend_chunk_size, config.blend_probe_stride, config.timeout_keep_alive) == (256, 1, 10)
    assert (config.resync_poll_interval, config.resync_max_wait, config.resync_page_size) == (1, 60, 1000)
    assert config.enable_startup_resync is True


@pytest.mark.parametrize(
    ("argv", "gpu", "cpu"),
    [
        ([], 1, 1),
        (["--max-workers", "4"], 4, 4),
        (["--max-workers", "4", "--max-gpu-workers", "2"], 2, 4),
        (["--max-cpu-workers", "3"], 1, 3),
    ],
)
def test_pools_inherit_max_workers(argv: list[str], gpu: int, cpu: int) -> None:
    config = server(argv)
    assert (config.mp.max_gpu_workers, config.mp.max_cpu_workers) == (gpu, cpu)


def test_instance_id_is_a_fresh_uuid4_unless_given() -> None:
    first, second = server().mp.instance_id, server().mp.instance_id
    assert first != second
    assert uuid.UUID(first).version == 4
    assert server(["--instance-id", "node-a"]).mp.instance_id == "node-a"


@pytest.mark.parametrize(
    ("argv", "lazy"), [([], True), (["--no-l1-use-lazy"], False), (["--l1-use-lazy"], True)]
)
def test_boolean_pairs(argv: list[str], lazy: bool) -> None:
    assert server(argv).l1.l1_use_lazy is lazy


def test_list_and_json_flags() -> None:
    config = server(
        [
            "--script-allowed-imports",
            "numpy",
            "pandas",
            "--runtime-plugin-config",
            '{"a": 1}',
            "--shm-name",
            "",
        ]
    )
    assert config.mp.script_allowed_imports == ["numpy", "pandas"]
    assert config.mp.runtime_plugin_config == {"a": 1}
    assert config.mp.shm_name == ""


@pytest.mark.parametrize("value", ["0", "1"])
def test_ratio_edges_are_accepted(value: str) -> None:
    assert server(
        ["--eviction-ratio", value, "--eviction-trigger-watermark", value]
    ).l1.eviction_ratio == float(value)


def test_coordinator_trigger_watermark_excludes_zero() -> None:
    with pytest.raises(ConfigError):
        load_config(CoordinatorConfig, env={"LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK": "0"})
    assert (
        load_config(
            CoordinatorConfig, env={"LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK": "1"}
        ).trigger_watermark
        == 1
    )


@pytest.mark.parametrize("mode", ["lmcache_driven", "auto"])
def test_blend_engines_accept_lmcache_driven_modes(mode: str) -> None:
    for engine in ("blend", "blend_legacy"):
        assert server(["--engine-type", engine, "--supported-transfer-mode", mode]).mp.engine_type == engine


def test_reaping_disabled_allows_any_grace() -> None:
    config = server(["--worker-reap-timeout-seconds", "0", "--worker-registration-grace-seconds", "0"])
    assert config.mp.worker_reap_timeout_seconds == 0


def test_devdax_with_its_requirements() -> None:
    config = server(["--l1-devdax-path", "/dev/dax0.0", "--no-l1-use-lazy", "--shm-name", ""])
    assert str(config.l1.l1_devdax_path) == "/dev/dax0.0"


MINIMAL_SPECS: list[dict[str, Any]] = [
    {
        "type": "nixl_store",
        "backend": "POSIX",
        "backend_params": {"file_path": "/d", "use_direct_io": "false"},
        "pool_size": 64,
    },
    {"type": "nixl_store", "backend": "OBJ", "backend_params": {}, "pool_size": 32},
    {
        "type": "nixl_store_dynamic",
        "backend": "POSIX",
        "backend_params": {"file_path": "/d", "use_direct_io": "false", "max_capacity_gb": "10"},
    },
    {"type": "fs", "base_path": "/data/l2", "relative_tmp_dir": ".tmp"},
    {"type": "fs_native", "base_path": "/data/l2"},
    {"type": "mock", "max_size_gb": 256, "mock_bandwidth_gb": 10},
    {"type": "mooncake_store", "master_server_address": "127.0.0.1:50051"},
    {"type": "aerospike", "hosts": "127.0.0.1:3000", "namespace": "lmcache", "set_name": "kv_chunks"},
    {"type": "aerospike", "hosts": "127.0.0.1:3000", "set": "other"},
    {"type": "s3", "s3_endpoint": "s3://my-bucket", "s3_region": "us-west-2"},
    {"type": "resp", "host": "127.0.0.1", "port": 6379},
    {"type": "plugin", "module_path": "my.mod", "class_name": "MyAdapter", "adapter_params": {"x": 1}},
    {"type": "native_plugin", "module_path": "my.mod", "class_name": "Conn"},
    {"type": "raw_block", "device_path": "/dev/nvme1n1", "slot_bytes": 1048576},
    {"type": "dax", "device_path": "/dev/dax0.0", "max_dax_size_gb": 64, "slot_bytes": 2097152},
]


def test_every_registered_type_validates() -> None:
    config = L2Config.model_validate({"l2_adapter": MINIMAL_SPECS})
    types = [spec.type for spec in config.l2_adapter]
    assert set(types) == {
        "nixl_store",
        "nixl_store_dynamic",
        "fs",
        "fs_native",
        "mock",
        "mooncake_store",
        "aerospike",
        "s3",
        "resp",
        "plugin",
        "native_plugin",
        "raw_block",
        "dax",
    }
    assert config.l2_adapter[8].set_name == "other"


def test_resp_env_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMCACHE_RESP_HOST", "redis.local")
    monkeypatch.setenv("LMCACHE_RESP_PORT", "6380")
    monkeypatch.setenv("LMCACHE_RESP_PASSWORD", "s3cret")
    spec = L2Config.model_validate({"l2_adapter": [{"type": "resp"}]}).l2_adapter[0]
    assert (spec.host, spec.port, spec.password) == ("redis.local", 6380, "s3cret")
    explicit = L2Config.model_validate({"l2_adapter": [{"type": "resp", "host": "h", "port": 1}]}).l2_adapter[
        0
    ]
    assert (explicit.host, explicit.port) == ("h", 1)


@pytest.mark.parametrize("name", ["laptop.yaml", "prod.yaml"])
def test_shipped_profiles_load(name: str) -> None:
    config = load_config(ServerConfig, profiles=[ROOT / "configs" / name])
    assert config.l1.eviction_policy == "LRU"
    if name == "laptop.yaml":
        assert config.l2.l2_adapter == [] and config.l1.l1_size_gb <= 2
        assert config.coordinator.coordinator_url is None
    else:
        assert [spec.type for spec in config.l2.l2_adapter] == ["fs"]
        assert config.l1.l1_size_gb >= 64 and config.coordinator.coordinator_url is not None
        assert not config.observability.disable_metrics


def test_mooncake_accepts_lmcache_field_names_and_no_own_segment() -> None:
    spec = L2Config.model_validate(
        {
            "l2_adapter": [
                {
                    "type": "mooncake_store",
                    "master_server_addr": "10.0.0.1:50051",
                    "rdma_devices": "mlx5_0",
                    "global_segment_size": 0,
                }
            ]
        }
    ).l2_adapter[0]
    assert (spec.master_server_address, spec.device_name, spec.global_segment_size) == (
        "10.0.0.1:50051",
        "mlx5_0",
        0,
    )
    with pytest.raises(ValidationError):
        L2Config.model_validate({"l2_adapter": [{"type": "mooncake_store", "global_segment_size": 1}]})


def test_fleet_profile_loads_with_a_shared_l2() -> None:
    config = load_config(ServerConfig, profiles=[ROOT / "configs" / "fleet.yaml"])
    (spec,) = config.l2.l2_adapter
    assert spec.type == "resp" and spec.shared is True
    assert config.coordinator.coordinator_l2_event_reporting is True
