"""Precedence: model defaults < profile 1 < profile 2 < env < flags; mappings merge, lists are replaced."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from lmcache.app.config import CoordinatorConfig, ServerConfig, load_config
from tests.unit.config_helpers import parse_flags

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

BASE = "l1: {l1_size_gb: 1, eviction_policy: LRU}\n"
P1 = BASE + "log_level: WARNING\nmp: {port: 6001, chunk_size: 512}\n"
P2 = "log_level: ERROR\nmp: {port: 6002}\n"

# (layers present, expected log_level, expected port): each row adds one layer over the previous.
CASES = [
    ((), "INFO", 5555),
    (("p1",), "WARNING", 6001),
    (("p1", "p2"), "ERROR", 6002),
    (("p1", "p2", "env"), "DEBUG", 6002),
    (("p1", "p2", "env", "flags"), "CRITICAL", 6004),
]


@pytest.mark.parametrize(("layers", "log_level", "port"), CASES)
def test_each_layer_overrides_the_one_below(
    layers: tuple[str, ...], log_level: str, port: int, write_yaml: Callable[[str, str], Path]
) -> None:
    profiles = [write_yaml("base.yaml", BASE)]
    profiles += [
        write_yaml(f"{name}.yaml", {"p1": P1, "p2": P2}[name]) for name in layers if name.startswith("p")
    ]
    env = {"LMCACHE_LOG_LEVEL": "debug"} if "env" in layers else {}
    argv = ["--log-level", "CRITICAL", "--port", "6004"] if "flags" in layers else []
    config = load_config(ServerConfig, profiles=profiles, env=env, flags=parse_flags(ServerConfig, argv))
    assert (config.log_level, config.mp.port) == (log_level, port)
    # A key only profile 1 sets survives the later layers: mappings merge key by key.
    assert config.mp.chunk_size == (512 if "p1" in layers else 256)


def test_flag_list_replaces_profile_cascade(write_yaml: Callable[[str, str], Path]) -> None:
    profile = write_yaml(
        "cascade.yaml",
        BASE + "l2:\n  l2_adapter:\n    - {type: fs, base_path: /a}\n"
        "    - {type: mock, max_size_gb: 1, mock_bandwidth_gb: 1}\n",
    )
    from_profile = load_config(ServerConfig, profiles=[profile])
    assert [spec.type for spec in from_profile.l2.l2_adapter] == ["fs", "mock"]
    flags = parse_flags(ServerConfig, ["--l2-adapter", '{"type": "fs", "base_path": "/b"}'])
    replaced = load_config(ServerConfig, profiles=[profile], flags=flags)
    assert [(spec.type, getattr(spec, "base_path", None)) for spec in replaced.l2.l2_adapter] == [
        ("fs", "/b")
    ]


def test_later_profile_list_replaces_earlier(write_yaml: Callable[[str, str], Path]) -> None:
    first = write_yaml("a.yaml", BASE + "mp: {script_allowed_imports: [numpy, pandas]}\n")
    second = write_yaml("b.yaml", "mp: {script_allowed_imports: [json]}\n")
    config = load_config(ServerConfig, profiles=[first, second])
    assert config.mp.script_allowed_imports == ["json"]


def test_repeated_l2_flags_keep_their_order() -> None:
    specs = [f'{{"type": "fs", "base_path": "/tier{n}"}}' for n in range(4)]
    argv = ["--l1-size-gb", "1", "--eviction-policy", "LRU"]
    for spec in specs:
        argv += ["--l2-adapter", spec]
    config = load_config(ServerConfig, flags=parse_flags(ServerConfig, argv))
    assert [getattr(s, "base_path", None) for s in config.l2.l2_adapter] == [f"/tier{n}" for n in range(4)]


@pytest.mark.parametrize(
    ("env", "argv", "field", "expected"),
    [
        ({"LMCACHE_MP_COORDINATOR_PORT": "9400"}, [], "port", 9400),
        ({"LMCACHE_MP_COORDINATOR_PORT": "9400"}, ["--port", "9500"], "port", 9500),
        ({"LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK": "0.5"}, [], "trigger_watermark", 0.5),
        ({"LMCACHE_MP_COORDINATOR_RESYNC_PAGE_SIZE": "50"}, [], "resync_page_size", 50),
        ({"LMCACHE_MP_COORDINATOR_ENABLE_STARTUP_RESYNC": "false"}, [], "enable_startup_resync", False),
        ({"LMCACHE_MP_COORDINATOR_HOSTX": "1.2.3.4"}, [], "host", "0.0.0.0"),
    ],
)
def test_coordinator_env_fallbacks(env: dict[str, str], argv: list[str], field: str, expected: Any) -> None:
    config = load_config(CoordinatorConfig, env=env, flags=parse_flags(CoordinatorConfig, argv))
    assert getattr(config, field) == expected


def test_coordinator_env_covers_every_documented_variable() -> None:
    documented = {
        "HOST",
        "PORT",
        "INSTANCE_TIMEOUT",
        "HEALTH_CHECK_INTERVAL",
        "EVICTION_CHECK_INTERVAL",
        "EVICTION_RATIO",
        "TRIGGER_WATERMARK",
        "BLEND_CHUNK_SIZE",
        "BLEND_PROBE_STRIDE",
        "TIMEOUT_KEEP_ALIVE",
        "ENABLE_STARTUP_RESYNC",
        "RESYNC_POLL_INTERVAL",
        "RESYNC_MAX_WAIT",
        "RESYNC_PAGE_SIZE",
    }
    env = {f"LMCACHE_MP_COORDINATOR_{name}": "7" for name in documented - {"ENABLE_STARTUP_RESYNC", "HOST"}}
    env |= {"LMCACHE_MP_COORDINATOR_ENABLE_STARTUP_RESYNC": "0", "LMCACHE_MP_COORDINATOR_HOST": "127.0.0.1"}
    env |= {"LMCACHE_MP_COORDINATOR_EVICTION_RATIO": "0.3", "LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK": "0.7"}
    config = load_config(CoordinatorConfig, env=env).model_dump()
    defaults = load_config(CoordinatorConfig).model_dump()
    changed = {key for key in config if config[key] != defaults[key]}
    assert changed == {name.lower() for name in documented}


def test_server_fleet_env_fallbacks() -> None:
    env = {"LMCACHE_COORDINATOR_URL": "http://coord:9300/", "LMCACHE_COORDINATOR_HEARTBEAT_INTERVAL": "2"}
    config = load_config(
        ServerConfig,
        env=env,
        flags=parse_flags(ServerConfig, ["--l1-size-gb", "1", "--eviction-policy", "LRU"]),
    )
    assert config.coordinator.coordinator_url == "http://coord:9300"
    assert config.coordinator.coordinator_heartbeat_interval == 2.0
