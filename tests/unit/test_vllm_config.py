"""`lmcache.mp.*` extra-config keys, the transfer-mode env var and kv_role."""

from __future__ import annotations

import pytest

from lmcache.adapters.vllm.config import (
    ConnectorConfig,
    ConnectorConfigError,
    KVRole,
    parse_extra_config,
    resolve_transfer_mode,
    server_ops,
)


def test_defaults_match_the_spec() -> None:
    config = parse_extra_config(None, {})
    assert config == ConnectorConfig()
    assert (config.host, config.port, config.mq_timeout, config.heartbeat_interval) == (
        "tcp://localhost",
        5555,
        300.0,
        10.0,
    )
    assert (config.mp_transfer_mode, config.save_decode_cache) == ("auto", False)
    assert config.server_url == "tcp://localhost:5555"


def test_every_key_is_read_and_other_keys_are_ignored() -> None:
    extra = {
        "lmcache.mp.host": "10.0.0.1",
        "lmcache.mp.port": "6555",
        "lmcache.mp.mq_timeout": 5,
        "lmcache.mp.heartbeat_interval": "2.5",
        "lmcache.mp.mp_transfer_mode": "ENGINE_DRIVEN",
        "lmcache.mp.save_decode_cache": "true",
        "some.other.key": "x",
    }
    config = parse_extra_config(extra, {})
    assert config.server_url == "tcp://10.0.0.1:6555"
    assert (config.mq_timeout, config.heartbeat_interval) == (5.0, 2.5)
    assert (config.mp_transfer_mode, config.save_decode_cache) == ("engine_driven", True)
    assert config.explicit == {
        "host",
        "port",
        "mq_timeout",
        "heartbeat_interval",
        "mp_transfer_mode",
        "save_decode_cache",
    }
    assert "lmcache.mp.port = 6555 (overridden, default: 5555)" in config.describe()


def test_the_env_var_sets_the_mode_unless_the_key_does() -> None:
    env = {"LMCACHE_MP_TRANSFER_MODE": "lmcache_driven"}
    assert parse_extra_config({}, env).mp_transfer_mode == "lmcache_driven"
    key = {"lmcache.mp.mp_transfer_mode": "engine_driven"}
    assert parse_extra_config(key, env).mp_transfer_mode == "engine_driven"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lmcache.mp.port", "eighty"),
        ("lmcache.mp.port", 70000),
        ("lmcache.mp.port", True),
        ("lmcache.mp.mq_timeout", 0),
        ("lmcache.mp.mq_timeout", "soon"),
        ("lmcache.mp.heartbeat_interval", float("nan")),
        ("lmcache.mp.mp_transfer_mode", "fastest"),
        ("lmcache.mp.save_decode_cache", "maybe"),
        ("lmcache.mp.host", ""),
    ],
)
def test_bad_values_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ConnectorConfigError, match=key.replace(".", r"\.")):
        parse_extra_config({key: value}, {})


def test_a_bad_env_mode_names_the_variable() -> None:
    with pytest.raises(ConnectorConfigError, match="LMCACHE_MP_TRANSFER_MODE"):
        parse_extra_config({}, {"LMCACHE_MP_TRANSFER_MODE": "sideways"})


def test_modes_follow_the_spec_auto_is_engine_driven_for_cuda_only() -> None:
    assert resolve_transfer_mode("auto", "cuda") == "engine_driven"
    assert resolve_transfer_mode("auto", "cpu") == "lmcache_driven"
    assert resolve_transfer_mode("lmcache_driven", "cuda") == "lmcache_driven"
    assert resolve_transfer_mode("engine_driven", "cpu") == "engine_driven"
    # the spec's engine_driven (shared KV memory, the server copies) uses the server's lmcache_driven ops
    assert server_ops("engine_driven") == "lmcache_driven"
    assert server_ops("lmcache_driven") == "engine_driven"


def test_kv_roles() -> None:
    both, producer, consumer = KVRole.parse(None), KVRole.parse("kv_producer"), KVRole.parse("kv_consumer")
    assert (both.can_store, both.can_load) == (True, True)
    assert (producer.can_store, producer.can_load) == (True, False)
    assert (consumer.can_store, consumer.can_load) == (False, True)
    with pytest.raises(ConnectorConfigError, match="kv_role"):
        KVRole.parse("kv_sometimes")


def test_a_bad_key_is_reported_before_a_bad_env_mode() -> None:
    env = {"LMCACHE_MP_TRANSFER_MODE": "sideways"}
    with pytest.raises(ConnectorConfigError, match=r"^lmcache\.mp\.save_decode_cache must be true or false"):
        parse_extra_config({"lmcache.mp.save_decode_cache": "maybe"}, env)


def test_none_is_absent_and_describe_names_every_key_in_order() -> None:
    config = parse_extra_config({"lmcache.mp.port": None, "lmcache.mp.unknown": 1}, {})
    assert config.explicit == frozenset()
    assert config.describe() == [
        "lmcache.mp.host = tcp://localhost",
        "lmcache.mp.port = 5555",
        "lmcache.mp.mq_timeout = 300.0",
        "lmcache.mp.heartbeat_interval = 10.0",
        "lmcache.mp.mp_transfer_mode = auto",
        "lmcache.mp.save_decode_cache = False",
    ]
