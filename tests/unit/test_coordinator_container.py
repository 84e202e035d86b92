"""The coordinator's composition root resolves every provider and maps every config field."""

from __future__ import annotations

from pathlib import Path

from dependency_injector import providers
from litestar import Litestar

from lmcache.adapters.coordinator.runtime import CoordinatorRuntime
from lmcache.app.config import CoordinatorConfig, load_config
from lmcache.app.coordinator_container import CoordinatorContainer
from tests.fakes.clock import FakeClock


def test_defaults_resolve_to_an_app_over_one_runtime() -> None:
    container = CoordinatorContainer(config=load_config(CoordinatorConfig))
    clock = FakeClock()
    container.clock.override(providers.Object(clock))
    runtime = container.runtime()
    assert isinstance(runtime, CoordinatorRuntime)
    assert isinstance(container.app(), Litestar)
    assert container.runtime() is runtime
    assert runtime.state.registry.timeout_s == 30
    assert runtime.settings.checkpoint_path is None and runtime.settings.enable_startup_resync is True


def test_every_setting_comes_from_the_config() -> None:
    env = {
        "LMCACHE_MP_COORDINATOR_RESYNC_PAGE_SIZE": "50",
        "LMCACHE_MP_COORDINATOR_ENABLE_STARTUP_RESYNC": "false",
    }
    flags = {
        "instance_timeout": "7",
        "eviction_ratio": "0.5",
        "checkpoint_path": "/tmp/c.json",
        "blend_probe_stride": "2",
    }
    settings = CoordinatorContainer(config=load_config(CoordinatorConfig, env=env, flags=flags)).settings()
    assert settings.instance_timeout == 7 and settings.eviction_ratio == 0.5
    assert settings.checkpoint_path == Path("/tmp/c.json") and settings.blend_probe_stride == 2
    assert settings.resync_page_size == 50 and settings.enable_startup_resync is False
