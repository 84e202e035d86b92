"""Which given flags warn that they have no effect, and why; flags left at their defaults never warn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lmcache.app.config import ServerConfig, load_config
from lmcache.app.config.fields import leaf_fields
from lmcache.app.inert_flags import RULES, Facts, given_flags, ineffective_flags, warn_ineffective_flags
from tests.unit.config_helpers import REQUIRED, parse_flags, server

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = Path(__file__).resolve().parents[2]
CPU = Facts(cuda=False, memory_kind="shm")
CUDA_ANON = Facts(cuda=True, memory_kind="anonymous")


def _inert(argv: list[str], facts: Facts = CPU) -> dict[str, str]:
    return dict(ineffective_flags(server(argv), facts))


def test_every_rule_names_a_real_field() -> None:
    dests = {leaf.dest for leaf in leaf_fields(ServerConfig)}
    assert set(RULES) - dests == set()


def test_defaults_and_the_laptop_profile_warn_about_nothing() -> None:
    assert _inert([]) == {}
    assert {"l1.l1_size_gb", "l1.eviction_policy"} <= set(given_flags(server([])))
    assert "l2.periodic_notifier_interval_ms" not in given_flags(server([]))
    laptop = load_config(ServerConfig, profiles=[ROOT / "configs" / "laptop.yaml"])
    assert ineffective_flags(laptop, CPU) == []


@pytest.mark.parametrize(
    ("argv", "flag", "reason"),
    [
        (["--periodic-notifier-interval-ms", "5"], "--periodic-notifier-interval-ms", "no periodic notifier"),
        (["--runtime-plugin-config", '{"a": 1}'], "--runtime-plugin-config", "no --runtime-plugin-locations"),
        (["--trace-output", "/tmp/x.lct"], "--trace-output", "without --trace-level storage"),
        (["--gds-l1-use-direct-io"], "--gds-l1-use-direct-io", "off without --gds-l1-path"),
        (["--l1-use-lazy"], "--l1-use-lazy", "no CUDA device"),
        (["--l1-init-size-gb", "2"], "--l1-init-size-gb", "no CUDA device"),
        (["--script-allowed-imports", "json"], "--script-allowed-imports", "--enable-run-script"),
        (["--enable-segmented-prefix"], "--enable-segmented-prefix", "CacheBlend only"),
        (["--l2-prefetch-policy", "retain"], "--l2-prefetch-policy", "no --l2-adapter"),
        (["--eviction-policy", "noop", "--eviction-ratio", "0.5"], "--eviction-ratio", "noop never evicts"),
        (["--lookup-hash-log-max-files", "3"], "--lookup-hash-log-max-files", "--lookup-hash-log-dir"),
        (["--otlp-endpoint", "http://h:4317"], "--otlp-endpoint", "--enable-tracing"),
        (["--disable-metrics", "--prometheus-port", "9"], "--prometheus-port", "--disable-metrics"),
        (["--disable-observability", "--disable-logging"], "--disable-logging", "--disable-observability"),
        (["--coordinator-heartbeat-interval", "2"], "--coordinator-heartbeat-interval", "--coordinator-url"),
        (
            ["--coordinator-url", "http://c:9300", "--coordinator-l2-event-flush-interval", "2"],
            "--coordinator-l2-event-flush-interval",
            "--coordinator-l2-event-reporting",
        ),
        (
            ["--coordinator-url", "http://c:9300", "--coordinator-blend-timeout", "2"],
            "--coordinator-blend-timeout",
            "--engine-type blend",
        ),
        (
            ["--kv-event-log-size", "0", "--kv-event-log-max-bytes", "70000"],
            "--kv-event-log-max-bytes",
            "--kv-event-log-size 0",
        ),
        (
            ["--worker-reap-timeout-seconds", "0", "--worker-registration-grace-seconds", "9"],
            "--worker-registration-grace-seconds",
            "reaper off",
        ),
        (["--supported-transfer-mode", "lmcache_driven", "--shm-name", "x"], "--shm-name", "leaves out"),
    ],
)
def test_inert_flag_warns_with_its_reason(argv: list[str], flag: str, reason: str) -> None:
    found = _inert(argv)
    assert flag in found and reason in found[flag], found


@pytest.mark.parametrize(
    "argv",
    [
        ["--script-allowed-imports", "json", "--enable-run-script"],
        ["--enable-segmented-prefix", "--engine-type", "blend"],
        [
            "--l2-prefetch-policy",
            "retain",
            "--l2-adapter",
            '{"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}',
        ],
        ["--coordinator-url", "http://c:9300", "--coordinator-heartbeat-interval", "2"],
        ["--lookup-hash-log-dir", "/tmp/h", "--lookup-hash-log-max-files", "3"],
        ["--enable-tracing", "--otlp-endpoint", "http://h:4317"],
        ["--shm-name", "x"],
        ["--runtime-plugin-locations"],  # an empty list launches nothing, as the default
        ["--runtime-plugin-locations", "p.py", "--runtime-plugin-config", '{"a": 1}'],
        ["--trace-level", "storage", "--trace-output", "/tmp/x.lct"],
    ],
)
def test_the_same_flags_act_in_the_right_company(argv: list[str]) -> None:
    assert _inert(argv) == {}


def test_pinning_acts_only_on_a_cuda_host_with_the_anonymous_arena() -> None:
    assert _inert(["--l1-init-size-gb", "2"], CUDA_ANON) == {}
    assert (
        "SHM pool"
        in _inert(["--l1-init-size-gb", "2"], Facts(cuda=True, memory_kind="shm"))["--l1-init-size-gb"]
    )
    lazy_off = _inert(["--no-l1-use-lazy", "--l1-init-size-gb", "2"], CUDA_ANON)
    assert list(lazy_off) == ["--l1-init-size-gb"] and "--no-l1-use-lazy" in lazy_off["--l1-init-size-gb"]


def test_flags_from_profiles_and_environment_count_as_given(write_yaml: Callable[[str, str], Path]) -> None:
    profile = write_yaml("p.yaml", "l2: {periodic_notifier_interval_ms: 7}\n")
    config = load_config(
        ServerConfig,
        profiles=[profile],
        env={"LMCACHE_COORDINATOR_HEARTBEAT_INTERVAL": "3"},
        flags=parse_flags(ServerConfig, REQUIRED),
    )
    assert set(dict(ineffective_flags(config, CPU))) == {
        "--periodic-notifier-interval-ms",
        "--coordinator-heartbeat-interval",
    }


def test_one_warning_line_per_flag() -> None:
    lines: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("lmcache.flags")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)  # whatever level an earlier test left on the "lmcache" logger
    try:
        warn_ineffective_flags(
            server(["--trace-output", "/tmp/t.lct", "--l1-use-lazy", "--no-l1-use-lazy"]), CPU
        )
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [line.split(":")[0] for line in lines] == [
        "--l1-use-lazy has no effect",
        "--trace-output has no effect",
    ]
