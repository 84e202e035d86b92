"""The coordinator's composition root resolves every provider and maps every config field."""

from __future__ import annotations

from pathlib import Path

import uvicorn
from dependency_injector import providers
from litestar import Litestar

from lmcache.adapters.coordinator.service import CoordinatorService
from lmcache.app.cli import build_parser
from lmcache.app.config import CoordinatorConfig, load_config
from lmcache.app.coordinator_container import CoordinatorContainer
from tests.fakes.clock import FakeClock


def test_defaults_resolve_to_an_app_over_one_runtime() -> None:
    container = CoordinatorContainer(config=load_config(CoordinatorConfig))
    clock = FakeClock()
    container.clock.override(providers.Object(clock))
    runtime = container.runtime()
    assert isinstance(runtime, CoordinatorService)
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


def _uvicorn_keep_alive(argv: list[str], env: dict[str, str] | None = None) -> float:
    args = vars(build_parser().parse_args(["coordinator", *argv]))
    del args["command"], args["_model"]
    config = load_config(CoordinatorConfig, env=env or {}, flags=args)
    server = CoordinatorContainer(config=config).server()
    assert isinstance(server.config, uvicorn.Config)
    return float(server.config.timeout_keep_alive)


def test_timeout_keep_alive_reaches_uvicorn() -> None:
    assert _uvicorn_keep_alive([]) == 10  # the spec's default
    assert _uvicorn_keep_alive(["--timeout-keep-alive", "2.5"]) == 2.5  # a fraction is kept
    env = {"LMCACHE_MP_COORDINATOR_TIMEOUT_KEEP_ALIVE": "7"}
    assert _uvicorn_keep_alive([], env) == 7
    assert _uvicorn_keep_alive(["--timeout-keep-alive", "3"], env) == 3  # the flag wins over the env


def test_coordinator_settings_are_config_fields_of_the_same_name() -> None:
    """One declaration per value: every adapter setting but the per-call timeout comes from the config."""
    import dataclasses

    from lmcache.adapters.coordinator.settings import CoordinatorSettings
    from lmcache.app.config import CoordinatorConfig
    from lmcache.app.coordinator_container import settings_from_config

    names = {f.name for f in dataclasses.fields(CoordinatorSettings)}
    assert names - set(CoordinatorConfig.model_fields) == {"server_timeout"}
    config = CoordinatorConfig(eviction_ratio=0.35, resync_page_size=77)
    settings = settings_from_config(config)
    assert all(getattr(settings, n) == getattr(config, n) for n in names - {"server_timeout"})


def test_the_graph_is_built_once_and_shared(tmp_path: Path) -> None:
    """One instance of each part; the checkpoint file only with --checkpoint-path."""
    from lmcache.adapters.coordinator.checkpoint import JsonCheckpointFile

    assert CoordinatorContainer(config=CoordinatorConfig()).checkpoint() is None
    container = CoordinatorContainer(config=CoordinatorConfig(checkpoint_path=tmp_path / "c.json"))
    runtime = container.runtime()
    checkpoint = container.checkpoint()
    assert isinstance(checkpoint, JsonCheckpointFile) and runtime.loops._checkpoint is checkpoint
    assert runtime.state is container.state() and runtime.loops._state is runtime.state
    assert runtime.metrics is container.metrics() and runtime.servers is container.servers()


def test_the_entry_point_gets_the_service_and_a_server_over_its_app() -> None:
    container = CoordinatorContainer(config=load_config(CoordinatorConfig))
    graph = container.graph()
    assert graph.runtime is container.runtime() and graph.server is container.server()
    assert graph.server.config.app is container.app()
