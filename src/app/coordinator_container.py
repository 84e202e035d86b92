"""Composition root of `lmcache coordinator`: the only place naming the coordinator's concrete classes.

`CoordinatorContainer(config=...)` maps the validated `CoordinatorConfig` onto the adapter's plain
`CoordinatorSettings` and builds the whole graph: fleet state, metrics, the server client, the checkpoint
file (only with `--checkpoint-path`), the loops, their supervisor, the service that runs them, the
Litestar app over it and the uvicorn server for that app. `coordinator_main` reads one provider, `graph`.
Tests swap providers
(`container.clock.override(providers.Object(FakeClock()))`) instead of patching modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import uvicorn
from dependency_injector import containers, providers

from lmcache.adapters.coordinator.app import build_coordinator_app
from lmcache.adapters.coordinator.checkpoint import JsonCheckpointFile
from lmcache.adapters.coordinator.loops import FleetLoops
from lmcache.adapters.coordinator.metrics import CoordinatorMetrics
from lmcache.adapters.coordinator.servers import HttpFleetServers
from lmcache.adapters.coordinator.service import CoordinatorService
from lmcache.adapters.coordinator.settings import CoordinatorSettings
from lmcache.adapters.system_clock import SystemClock
from lmcache.app.config import CoordinatorConfig
from lmcache.app.coordinator_server import CoordinatorGraph, CoordinatorServer
from lmcache.app.plain_settings import plain_settings
from lmcache.domain.fleet_state import FleetState
from lmcache.domain.supervisor import Supervisor

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ("CoordinatorContainer", "settings_from_config")


def settings_from_config(config: CoordinatorConfig, **overrides: Any) -> CoordinatorSettings:
    """The adapter's plain settings: its fields are config fields of the same name (`overrides` win)."""
    return plain_settings(CoordinatorSettings, config, **overrides)


def _on_off(path: Path | None) -> str:
    return "off" if path is None else "on"


class CoordinatorContainer(containers.DeclarativeContainer):
    """Object graph of `lmcache coordinator`."""

    config = providers.Dependency(instance_of=CoordinatorConfig)
    clock = providers.Singleton(SystemClock)
    settings = providers.Singleton(settings_from_config, config)
    state = providers.Singleton(
        FleetState,
        clock,
        settings.provided.instance_timeout,
        settings.provided.blend_chunk_size,
        settings.provided.blend_probe_stride,
    )
    metrics = providers.Singleton(CoordinatorMetrics, state)
    servers = providers.Singleton(
        HttpFleetServers, settings.provided.server_timeout, settings.provided.server_auth_token
    )
    checkpoint = providers.Selector(  # --checkpoint-path unset: no checkpoint file at all
        providers.Callable(_on_off, settings.provided.checkpoint_path),
        on=providers.Singleton(JsonCheckpointFile, settings.provided.checkpoint_path),
        off=providers.Object(None),
    )
    loops = providers.Singleton(FleetLoops, state, servers, metrics, settings, checkpoint)
    supervisor = providers.Singleton(Supervisor, clock)
    runtime = providers.Singleton(
        CoordinatorService,
        settings,
        state=state,
        metrics=metrics,
        servers=servers,
        loops=loops,
        supervisor=supervisor,
    )
    app = providers.Singleton(build_coordinator_app, runtime)
    uvicorn_config = providers.Singleton(
        uvicorn.Config,
        app,
        host=config.provided.host,
        port=config.provided.port,
        # uvicorn annotates int but only uses it as a loop.call_later delay, so fractions work
        timeout_keep_alive=config.provided.timeout_keep_alive,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    server = providers.Singleton(CoordinatorServer, uvicorn_config)
    graph = providers.Singleton(CoordinatorGraph, runtime=runtime, server=server)
