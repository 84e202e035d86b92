"""Composition root of `lmcache server`, serving side: the engine, CacheBlend, the transport, HTTP.

It extends `telemetry_container.py` (metrics and bus subscribers), which extends `storage_container.py`
(L1, sessions, controllers, with `l2_container.py`'s cascade as a sub-container); `blend_container.py`
(CacheBlend) is a sub-container here. Together they are the only code naming the graph's concrete
classes (`replay_container.py` builds `lmcache trace replay`'s engine, `coordinator_container.py` the
coordinator's graph).

`lmcache server` builds `ServerContainer(config=...)` from one validated config and reads one provider,
`graph`: the `ServerGraph` the runtime drives (start order, signals, drain). Everything the runtime used to
decide is decided here: whether the engine-driven service exists (`--supported-transfer-mode`), which
ops the ZMQ socket thread runs inline (L1-only lookups too when no L2 adapter is configured: they lock
in place and never wait), the op table CacheBlend extends, the HTTP frontend's services and its settings
(copied by name from the config models). Tests swap providers with `override()` instead of patching
modules. Nothing is allocated or started at construction: providers are resolved on demand.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from dependency_injector import providers

from lmcache import __version__
from lmcache.adapters.http.app import build_http_app
from lmcache.adapters.http.config_view import redact_secrets
from lmcache.adapters.http.gate import HttpGate
from lmcache.adapters.http.server import HttpServer
from lmcache.adapters.http.services import HttpServices, HttpSettings
from lmcache.adapters.memory.shm import ShmL1Memory
from lmcache.adapters.plugins.supervisor import PluginSupervisor
from lmcache.adapters.transport.blend_handlers import BlendHandlers
from lmcache.adapters.transport.handlers import OpHandlers
from lmcache.adapters.transport.server import ZmqServer
from lmcache.app.blend_container import BlendContainer
from lmcache.app.http_frontend import metrics_source, status_extras
from lmcache.app.plain_settings import plain_settings
from lmcache.app.plugin_wiring import discover_plugins, plugin_environment
from lmcache.app.server_graph import ServerGraph
from lmcache.app.storage_container import StorageContainer
from lmcache.app.telemetry_container import TelemetryContainer
from lmcache.domain.cache_engine import CacheEngine
from lmcache.domain.engine_driven import EngineDrivenService
from lmcache.domain.transfer_modes import serves_lmcache_driven

if TYPE_CHECKING:
    from collections.abc import Callable

    from lmcache.app.blend_wiring import BlendServer
    from lmcache.app.config import ServerConfig
    from lmcache.app.config.server import HttpConfig
    from lmcache.domain.kv_events import KVEventLog
    from lmcache.domain.prefetch_controller import PrefetchController
    from lmcache.ports.l1_memory import L1Memory

__all__ = ("ServerContainer",)

_S = StorageContainer
_T = TelemetryContainer
_mp = _S.config.provided.mp

# Cheap ops the socket thread answers itself; the rest go to the affinity and CPU pools.
INLINE_OPS = frozenset({"query_prefetch_status", "free_lookup_locks", "end_session", "ping"})


def _on_off(on: bool) -> str:
    return "on" if on else "off"


def _blend_on(engine_type: str) -> str:
    return "off" if engine_type == "default" else "on"


def _shm_pool_name(memory: L1Memory) -> str:
    """The SHM pool engine-driven clients map, or "" when L1 is not one (`--shm-name ""`: bytes inline)."""
    return memory.name if isinstance(memory, ShmL1Memory) else ""


def _experimental_ops(kv_events: KVEventLog) -> list[str]:
    return ["kv_event_stream"] if kv_events.enabled else []


def _inline_ops(prefetch: PrefetchController) -> frozenset[str]:
    if prefetch.has_adapters:
        return INLINE_OPS
    return INLINE_OPS | {"lookup"}  # L1-only lookups lock in place and never wait (run_job_now)


def _zmq_url(host: str, port: int) -> str:
    return f"tcp://{'127.0.0.1' if host == 'localhost' else host}:{port}"


def _seconds(microseconds: int) -> float:
    return microseconds / 1e6


def _op_table(handlers: OpHandlers, *, blend: BlendServer | None) -> dict[str, Callable[..., Any]]:
    """The ops the ZMQ server dispatches: the handlers', plus the cb_* ops on a blend server."""
    table: dict[str, Callable[..., Any]] = dict(handlers.table)
    if blend is not None:  # --engine-type blend: the cb_* ops and the blend end_session
        table.update(BlendHandlers(blend.lookups, blend.retriever, blend.rope, handlers.end_session).table)
    return table


def _redacted(config: ServerConfig) -> dict[str, Any]:
    return dict(redact_secrets(config.model_dump(mode="json")))


def _http_settings(config: ServerConfig) -> HttpSettings:
    return plain_settings(HttpSettings, config.mp, config.l1, config.http)


def _http_server(
    make_services: Callable[..., HttpServices], http: HttpConfig, engine_problem: Callable[[], str | None]
) -> HttpServer:
    """The (not started) uvicorn server of the HTTP frontend, behind its auth gate."""
    app = HttpGate(build_http_app(make_services(engine_problem=engine_problem)), http.http_auth_token)
    return HttpServer(app, http.http_host, http.http_port, http.http_ssl_certfile, http.http_ssl_keyfile)


class ServerContainer(TelemetryContainer):
    """Object graph of `lmcache server` (module docstring)."""

    plugin_specs = providers.Singleton(discover_plugins, _mp.runtime_plugin_locations)  # checked here
    plugins = providers.Selector(  # None without runtime plugins; started after the ready line
        providers.Callable(_on_off, providers.Callable(bool, plugin_specs)),
        on=providers.Singleton(
            PluginSupervisor,
            plugin_specs,
            providers.Callable(plugin_environment, _S.config, os.environ),
            max_restarts=_mp.runtime_plugin_max_restarts,
            backoff_s=_mp.runtime_plugin_restart_backoff_seconds,
            grace_s=_mp.runtime_plugin_stop_grace_seconds,
        ),
        off=providers.Object(None),
    )
    store_listener = providers.Selector(  # hears every committed store; its choices are set below
        providers.Callable(_blend_on, _mp.engine_type)
    )
    engine = providers.Singleton(
        CacheEngine,
        _S.l1,
        _S.sessions,
        _S.workers,
        _S.prefetch_controller,
        _S.store_controller,
        submit=_S.storage_loop.provided.submit,
        kv_events=_S.kv_events,
        null_block_id=_mp.null_block_id,
        events=_S.events,
        store_listener=store_listener,
    )
    blend_graph = providers.Container(
        BlendContainer,
        config=_S.config,
        engine=engine,
        memory=_S.l1_memory,
        adapters=_S.l2_adapters,
        arena=_S.arena_source,
        storage_loop=_S.storage_loop,
        clock=_S.clock,
        events=_S.events,
        bus=_S.event_bus,
        metrics=_T.metrics,
    )
    blend = providers.Selector(  # None unless --engine-type blend|blend_legacy
        providers.Callable(_blend_on, _mp.engine_type), on=blend_graph.server, off=providers.Object(None)
    )
    # CacheBlend's registrar needs no engine, so the engine can be built with it (a blend engine only).
    store_listener.set_providers(on=blend_graph.registrar, off=providers.Object(None))
    engine_driven = providers.Selector(  # prepare/commit ops: --supported-transfer-mode engine_driven|auto
        providers.Callable(_on_off, _S.engine_driven_mode),
        on=providers.Singleton(
            EngineDrivenService, engine, _S.l1_memory, providers.Callable(_shm_pool_name, _S.l1_memory)
        ),
        off=providers.Object(None),
    )
    op_handlers = providers.Factory(  # the runtime passes on_unregister (it closes the ZMQ server's streams)
        OpHandlers,
        engine,
        _S.registrar,
        engine_driven,
        providers.Callable(_experimental_ops, _S.kv_events),
        lmcache_driven=providers.Callable(serves_lmcache_driven, _mp.supported_transfer_mode),
    )
    op_table = providers.Factory(_op_table, blend=blend)  # called with the handlers
    zmq_server = providers.Factory(  # called with handlers=<op table>; binds --host/--port
        ZmqServer,
        url=providers.Callable(_zmq_url, _mp.host, _mp.port),
        transfer_mode=_mp.supported_transfer_mode,
        kv_events=_S.kv_events,
        gpu_workers=_mp.max_gpu_workers,
        cpu_workers=_mp.max_cpu_workers,
        inline_ops=providers.Callable(_inline_ops, _S.prefetch_controller),
        busy_poll_s=providers.Callable(_seconds, _mp.busy_poll_us),
    )
    http_services = providers.Factory(  # called with engine_problem (the runtime's health of the engine)
        HttpServices,
        settings=providers.Callable(_http_settings, _S.config),
        engine=engine,
        quotas=_S.quotas,
        supervisor=_S.supervisor,
        eviction=_S.eviction_loop,
        hasher=_S.hasher,
        l2_adapters=_S.l2_adapters,
        l2_types=_T.adapter_types,
        run_storage=_S.storage_loop.provided.submit,
        config=providers.Callable(_redacted, _S.config),
        version=__version__,
        metrics=providers.Callable(metrics_source, _T.metrics),
        started_at=providers.Callable(time.time),
        events=_S.events,
        l1_memory=_S.l1_memory,
        status_extras=providers.Callable(status_extras, blend, plugins, _S.trace_recorder),
    )
    http_server = providers.Factory(_http_server, http_services.provider, _S.config.provided.http)
    graph = providers.Singleton(
        ServerGraph,
        config=_S.config,
        l2_adapters=_S.l2_adapters,  # resolved in this order: a bad --l2-adapter is reported first
        l1_memory=_S.l1_memory,
        l1=_S.l1,
        sessions=_S.sessions,
        workers=_S.workers,
        events=_S.events,
        supervisor=_S.supervisor,
        eviction_loop=_S.eviction_loop,
        storage_loop=_S.storage_loop,
        store_controller=_S.store_controller,
        coordinator_client=_S.coordinator_client,
        trace_recorder=_S.trace_recorder,
        plugins=plugins,
        telemetry=_T.telemetry.provider,
        blend=blend.provider,
        op_handlers=op_handlers.provider,
        op_table=op_table.provider,
        zmq_server=zmq_server.provider,
        http_server=http_server.provider,
    )
