"""Composition root of `lmcache coordinator`: the only place naming the coordinator's concrete classes.

`CoordinatorContainer(config=...)` maps the validated `CoordinatorConfig` onto the adapter's plain
`CoordinatorSettings`, and builds the runtime, the Litestar app and the uvicorn server on demand. Tests
swap providers (`container.clock.override(providers.Object(FakeClock()))`) instead of patching modules.
"""

from __future__ import annotations

from typing import Any

from dependency_injector import containers, providers

from lmcache.adapters.coordinator.app import build_coordinator_app
from lmcache.adapters.coordinator.service import CoordinatorService
from lmcache.adapters.coordinator.settings import CoordinatorSettings
from lmcache.adapters.system_clock import SystemClock
from lmcache.app.config import CoordinatorConfig
from lmcache.app.plain_settings import plain_settings

__all__ = ("CoordinatorContainer", "settings_from_config")


def settings_from_config(config: CoordinatorConfig, **overrides: Any) -> CoordinatorSettings:
    """The adapter's plain settings: its fields are config fields of the same name (`overrides` win)."""
    return plain_settings(CoordinatorSettings, config, **overrides)


class CoordinatorContainer(containers.DeclarativeContainer):
    """Object graph of `lmcache coordinator`."""

    config = providers.Dependency(instance_of=CoordinatorConfig)
    clock = providers.Singleton(SystemClock)
    settings = providers.Singleton(settings_from_config, config)
    runtime = providers.Singleton(CoordinatorService, settings, clock)
    app = providers.Singleton(build_coordinator_app, runtime)
