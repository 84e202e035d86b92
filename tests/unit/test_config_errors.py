"""One error message per kind of mistake; each names the flag, env var, or file and key."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lmcache.app.config import ConfigError, CoordinatorConfig, ServerConfig, load_config
from tests.unit.config_helpers import REQUIRED, parse_flags, server

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

FS_NO_PATH = '{"type": "fs"}'


def _errors(argv: list[str], *, required: bool = True, **kwargs: object) -> tuple[str, ...]:
    flags = parse_flags(ServerConfig, (REQUIRED if required else []) + argv)
    with pytest.raises(ConfigError) as caught:
        load_config(ServerConfig, flags=flags, **kwargs)  # type: ignore[arg-type]
    return caught.value.messages


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--eviction-ratio", "1.5"], "--eviction-ratio: must be <= 1 (got 1.5)"),
        (["--eviction-trigger-watermark", "-0.1"], "--eviction-trigger-watermark: must be >= 0 (got -0.1)"),
        (["--chunk-size", "0"], "--chunk-size: must be > 0 (got 0)"),
        (["--port", "70000"], "--port: must be <= 65535 (got 70000)"),
        (["--busy-poll-us", "-1"], "--busy-poll-us: must be >= 0 (got -1)"),
        (
            ["--l1-size-gb", "lots"],
            "--l1-size-gb: input should be a valid number, unable to parse string as a number (got lots)",
        ),
        (["--l1-align-bytes", "1000"], "--l1-align-bytes: must be a power of two >= 8 (got 1000)"),
        (["--l1-align-bytes", "4"], "--l1-align-bytes: must be a power of two >= 8 (got 4)"),
        (["--runtime-plugin-config", "[1]"], "--runtime-plugin-config: must be a JSON object"),
        (
            ["--coordinator-url", "coord:9300"],
            "--coordinator-url: must be an http:// or https:// URL with a host (got 'coord:9300')",
        ),
        (
            ["--coordinator-advertise-ip", "host"],
            "--coordinator-advertise-ip: must be an IPv4 or IPv6 address (got 'host')",
        ),
        (["--coordinator-heartbeat-interval", "0"], "--coordinator-heartbeat-interval: must be > 0 (got 0)"),
        (["--metrics-sample-rate", "2"], "--metrics-sample-rate: must be <= 1 (got 2)"),
        (
            ["--worker-registration-grace-seconds", "10"],
            "--worker-registration-grace-seconds (10) must be >= --worker-reap-timeout-seconds (120)",
        ),
        (["--enable-tracing"], "--enable-tracing needs --otlp-endpoint"),
        (
            ["--engine-type", "blend", "--supported-transfer-mode", "engine_driven"],
            "--engine-type blend needs --supported-transfer-mode lmcache_driven or auto (got engine_driven)",
        ),
        (
            ["--l1-devdax-path", "/dev/dax0.0"],
            "--l1-devdax-path needs --no-l1-use-lazy (the DAX mapping is not pinned lazily)",
        ),
        (
            ["--l1-devdax-path", "/dev/dax0.0", "--no-l1-use-lazy"],
            '--l1-devdax-path needs --shm-name "" (the L1 bytes live in the DAX mapping, not in a shareable '
            "SHM "
            "segment)",
        ),
    ],
)
def test_flag_mistakes(argv: list[str], message: str) -> None:
    assert _errors(argv) == (message,)


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ([FS_NO_PATH], "--l2-adapter #1 (type 'fs'): field 'base_path' is required"),
        (
            ['{"type": "mock", "max_size_gb": 1, "mock_bandwidth_gb": 1}', FS_NO_PATH],
            "--l2-adapter #2 (type 'fs'): field 'base_path' is required",
        ),
        (
            ['{"type": "mock", "max_size_gb": 0, "mock_bandwidth_gb": 1}'],
            "--l2-adapter #1 (type 'mock'): field 'max_size_gb': must be > 0 (got 0)",
        ),
        (
            ['{"type": "fs", "base_path": "/x", "bogus": 1}'],
            "--l2-adapter #1 (type 'fs'): unknown field 'bogus'",
        ),
        (
            ['{"type": "ftp"}'],
            "--l2-adapter #1: unknown type 'ftp' (expected one of: 'nixl_store', "
            "'nixl_store_dynamic', 'fs', 'fs_native', 'mock', 'mooncake_store', 'aerospike', "
            "'s3', 'resp', 'valkey', 'hfbucket', 'plugin', 'native_plugin', 'raw_block', 'dax', "
            "'fault_inject')",
        ),
        (['{"base_path": "/x"}'], '--l2-adapter #1: missing the "type" field'),
        (
            ["{not json"],
            "--l2-adapter #1: not valid JSON (Expecting property name enclosed in double quotes at column 2)",
        ),
        (['["fs"]'], '--l2-adapter #1: must be a JSON object with a "type" field'),
        (
            ['{"type": "nixl_store", "backend": "POSIX", "pool_size": 4}'],
            "--l2-adapter #1 (type 'nixl_store'): "
            "backend POSIX needs backend_params file_path, use_direct_io",
        ),
    ],
)
def test_l2_adapter_mistakes(specs: list[str], message: str) -> None:
    argv = [arg for spec in specs for arg in ("--l2-adapter", spec)]
    assert _errors(argv) == (message,)


def test_missing_required_flags_say_so() -> None:
    assert _errors([], required=False) == ("--l1-size-gb is required", "--eviction-policy is required")


def test_argparse_rejects_bad_choice() -> None:
    with pytest.raises(Exception, match="invalid choice: 'MRU'"):
        parse_flags(ServerConfig, ["--eviction-policy", "MRU"])


def test_env_mistake_names_the_variable() -> None:
    assert _errors([], env={"LMCACHE_LOG_LEVEL": "chatty"}) == (
        "LMCACHE_LOG_LEVEL: must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR' or 'CRITICAL' (got CHATTY)",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(CoordinatorConfig, env={"LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK": "0"})
    assert caught.value.messages == ("LMCACHE_MP_COORDINATOR_TRIGGER_WATERMARK: must be > 0 (got 0)",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("l1: {l1_size_gib: 8}\n", "{file}: l1.l1_size_gib: unknown key"),
        ("cache: {size: 8}\n", "{file}: cache: unknown key"),
        ("mp: 8\n", "{file}: mp: must be a mapping (got 8)"),
        ("l1: {eviction_ratio: 3}\n", "{file}: l1.eviction_ratio: must be <= 1 (got 3)"),
        (
            "l2: {l2_adapter: [{type: fs}]}\n",
            "{file}: l2.l2_adapter #1 (type 'fs'): field 'base_path' is required",
        ),
        (
            "l1: [1, 2\n",
            "{file}: invalid YAML at line 2, column 1: expected ',' or ']', but got '<stream end>'",
        ),
        ("- a\n- b\n", "{file}: a profile must be a mapping of section names to settings"),
    ],
)
def test_profile_mistakes_name_file_and_key(
    text: str, message: str, write_yaml: Callable[[str, str], Path]
) -> None:
    profile = write_yaml("site.yaml", text)
    assert _errors([], profiles=[profile]) == (message.format(file=profile),)


def test_missing_profile(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert _errors([], profiles=[missing]) == (
        f"--config {missing}: cannot read (No such file or directory)",
    )


def test_flag_fixes_a_profile_mistake(write_yaml: Callable[[str, str], Path]) -> None:
    profile = write_yaml("bad.yaml", "l1: {eviction_ratio: 3}\n")
    assert server(["--eviction-ratio", "0.5"], profiles=[profile]).l1.eviction_ratio == 0.5


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_non_finite_numbers_are_rejected(value: str) -> None:
    (message,) = _errors(["--l1-size-gb", value])
    assert message.startswith("--l1-size-gb: ") and "finite" in message
