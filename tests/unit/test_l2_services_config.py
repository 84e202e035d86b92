"""The `eviction` and `serde` sub-dicts of `--l2-adapter`: what validates, and what each mistake says."""

from __future__ import annotations

import json

import pytest

from lmcache.app.config import ConfigError, ServerConfig, load_config
from tests.unit.config_helpers import REQUIRED, parse_flags, server

FS = {"type": "fs", "base_path": "/tmp/lmcache-l2", "max_capacity_gb": 1}


def _adapter(**extra: object) -> list[str]:
    return ["--l2-adapter", json.dumps({**FS, **extra})]


def _errors(argv: list[str]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_config(ServerConfig, flags=parse_flags(ServerConfig, REQUIRED + argv))
    return caught.value.messages


@pytest.mark.parametrize("policy", ["LRU", "ARC", "IsolatedLRU", "noop"])
def test_every_l2_policy_validates(policy: str) -> None:
    config = server(_adapter(eviction={"eviction_policy": policy}))
    eviction = config.l2.l2_adapter[0].eviction
    assert eviction is not None
    assert (eviction.eviction_policy, eviction.trigger_watermark, eviction.eviction_ratio) == (
        policy,
        0.8,
        0.2,
    )


def test_an_unknown_policy_names_the_adapter_and_the_allowed_names() -> None:
    argv = [
        "--l2-adapter",
        json.dumps({"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}),
        *_adapter(eviction={"eviction_policy": "MRU"}),
    ]
    assert _errors(argv) == (
        "--l2-adapter #2 (type 'fs'): field 'eviction.eviction_policy': must be one of 'LRU', 'ARC', "
        "'IsolatedLRU' or 'noop' (got MRU)",
    )


def test_arc_is_not_an_l1_policy() -> None:
    import argparse

    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'ARC'"):
        parse_flags(ServerConfig, ["--l1-size-gb", "1", "--eviction-policy", "ARC"])


def test_one_serde_stage_is_a_chain_of_one() -> None:
    config = server(_adapter(serde={"type": "zstd"}))
    serde = config.l2.l2_adapter[0].serde
    assert serde is not None and [s.type for s in serde] == ["zstd"]


@pytest.mark.parametrize(
    ("serde", "message"),
    [
        (
            {"type": "turboquant"},
            "field 'serde.0': unknown type 'turboquant' (expected one of: 'fp8', 'aesgcm', 'zstd')",
        ),
        ({"type": "aesgcm"}, "field 'serde.0.aesgcm.master_key_path' is required"),
        ({"type": "aesgcm", "aes_bits": 192, "master_key_path": "/k"}, "must be one of 128 or 256 (got 192)"),
        ({"type": "fp8", "fp8_dtype": "float8_e3m4"}, "must be one of 'float8_e4m3fn' or 'float8_e5m2'"),
        ({"type": "zstd", "level": 30}, "field 'serde.0.zstd.level': must be <= 19 (got 30)"),
        ([], "field 'serde': a serde chain needs at least one stage"),
        ([{"type": "zstd"}, {"type": "fp8"}], "fp8 must be the first serde stage"),
        ([{"type": "aesgcm", "master_key_path": "/k"}, {"type": "zstd"}], "put zstd before aesgcm"),
        ([{"type": "zstd"}, {"type": "zstd"}], "serde type 'zstd' appears more than once"),
    ],
)
def test_serde_mistakes_name_the_adapter_and_the_field(serde: object, message: str) -> None:
    (line,) = _errors(_adapter(serde=serde))
    assert line.startswith("--l2-adapter #1 (type 'fs'): ")
    assert message in line


def test_isolated_lru_on_a_shared_tier_is_the_coordinators_job() -> None:
    argv = [
        *_adapter(shared=True, eviction={"eviction_policy": "IsolatedLRU"}),
        "--coordinator-url",
        "http://c:9300",
    ]
    assert _errors(argv) == (
        "--l2-adapter #1: eviction_policy IsolatedLRU on a shared adapter conflicts with --coordinator-url "
        "(the coordinator enforces quotas on a shared L2): use LRU or ARC",
    )
    coordinator = ["--coordinator-url", "http://c:9300"]
    assert server([*_adapter(shared=True, eviction={"eviction_policy": "ARC"}), *coordinator])
    assert server([*_adapter(eviction={"eviction_policy": "IsolatedLRU"}), *coordinator])


def test_unknown_keys_are_named_but_lmcache_keys_we_ignore_are_accepted() -> None:
    assert _errors(_adapter(evicton={"eviction_policy": "LRU"})) == (
        "--l2-adapter #1 (type 'fs'): unknown field 'evicton'",
    )
    spec = server(_adapter(affinity_tag="_default", per_op_workers={"load": 2})).l2.l2_adapter[0]
    assert spec.ignored_keys == ("affinity_tag", "per_op_workers")
    assert "affinity_tag" not in spec.model_dump()
