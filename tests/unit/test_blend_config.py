"""CacheBlend configuration: the fleet knobs with their env fallbacks, and the engine-type rules (§6-7)."""

from __future__ import annotations

import pytest

from lmcache.app.config import ConfigError, ServerConfig, load_config
from tests.unit.config_helpers import REQUIRED, parse_flags, server


def test_blend_fleet_knobs_default_env_and_flag() -> None:
    config = server()
    assert config.coordinator.coordinator_blend_timeout == 1.0
    assert config.coordinator.coordinator_blend_match_concurrency == 8
    env = {"LMCACHE_COORDINATOR_BLEND_TIMEOUT": "0.25", "LMCACHE_COORDINATOR_BLEND_MATCH_CONCURRENCY": "3"}
    from_env = load_config(ServerConfig, env=env, flags=parse_flags(ServerConfig, REQUIRED))
    assert from_env.coordinator.coordinator_blend_timeout == 0.25
    assert from_env.coordinator.coordinator_blend_match_concurrency == 3
    flags = parse_flags(ServerConfig, [*REQUIRED, "--coordinator-blend-timeout", "2.5"])
    assert load_config(ServerConfig, env=env, flags=flags).coordinator.coordinator_blend_timeout == 2.5


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--coordinator-blend-timeout", "0"], "--coordinator-blend-timeout"),
        (["--coordinator-blend-timeout", "inf"], "--coordinator-blend-timeout"),
        (["--coordinator-blend-match-concurrency", "0"], "--coordinator-blend-match-concurrency"),
        (
            ["--engine-type", "blend", "--supported-transfer-mode", "engine_driven"],
            "--supported-transfer-mode",
        ),
    ],
)
def test_blend_mistakes_name_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        server(argv)
    assert message in str(caught.value)


def test_engine_driven_error_names_both_flags() -> None:
    with pytest.raises(ConfigError) as caught:
        server(["--engine-type", "blend", "--supported-transfer-mode", "engine_driven"])
    assert "--engine-type blend" in str(caught.value) and "--supported-transfer-mode" in str(caught.value)
    assert server(["--engine-type", "blend_legacy"]).mp.engine_type == "blend_legacy"
    assert server(["--engine-type", "blend", "--enable-segmented-prefix"]).mp.enable_segmented_prefix
