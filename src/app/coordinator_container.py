"""Composition root of `lmcache coordinator`: the only place naming the coordinator's concrete classes.

`CoordinatorContainer(config=...)` maps the validated `CoordinatorConfig` onto the adapter's plain
`CoordinatorSettings`, and builds the runtime, the Litestar app and the uvicorn server on demand. Tests
swap providers (`container.clock.override(providers.Object(FakeClock()))`) instead of patching modules.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from lmcache.adapters.coordinator.app import build_coordinator_app
from lmcache.adapters.coordinator.loops import CoordinatorSettings
from lmcache.adapters.coordinator.runtime import CoordinatorRuntime
from lmcache.adapters.system_clock import SystemClock
from lmcache.app.config import CoordinatorConfig

__all__ = ("CoordinatorContainer", "settings_from_config")


def settings_from_config(config: CoordinatorConfig) -> CoordinatorSettings:
    """The adapter's plain settings from the validated config."""
    return CoordinatorSettings(
        instance_timeout=config.instance_timeout,
        health_check_interval=config.health_check_interval,
        eviction_check_interval=config.eviction_check_interval,
        eviction_ratio=config.eviction_ratio,
        trigger_watermark=config.trigger_watermark,
        blend_chunk_size=config.blend_chunk_size,
        blend_probe_stride=config.blend_probe_stride,
        checkpoint_path=config.checkpoint_path,
        checkpoint_interval=config.checkpoint_interval,
        enable_startup_resync=config.enable_startup_resync,
        resync_poll_interval=config.resync_poll_interval,
        resync_max_wait=config.resync_max_wait,
        resync_page_size=config.resync_page_size,
        server_auth_token=config.server_auth_token,
    )


class CoordinatorContainer(containers.DeclarativeContainer):
    """Object graph of `lmcache coordinator`."""

    config = providers.Dependency(instance_of=CoordinatorConfig)
    clock = providers.Singleton(SystemClock)
    settings = providers.Singleton(settings_from_config, config)
    runtime = providers.Singleton(CoordinatorRuntime, settings, clock)
    app = providers.Singleton(build_coordinator_app, runtime)
