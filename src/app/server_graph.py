"""What `ServerRuntime` drives: the built object graph of `lmcache server`, handed over in one piece.

The container (`container.py`) builds this from one validated config; the runtime never sees the container,
so no provider is read outside the composition root. The storage engine's parts are built objects. The
parts the runtime starts in order, or that need the runtime's own callbacks, are factories the container
injects (`providers.Factory(...).provider`): `telemetry` and `blend` are built during start (their
subscribers open files and may fail, and must be undone by `close`), `op_handlers` takes the runtime's
`on_unregister`, `zmq_server` the op table (binding its socket), `http_server` the runtime's
`engine_problem` for `/healthcheck`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from lmcache.adapters.coordinator.client import CoordinatorClient
    from lmcache.adapters.http.server import HttpServer
    from lmcache.adapters.memory._mapped import MappedL1Memory
    from lmcache.adapters.plugins.supervisor import PluginSupervisor
    from lmcache.adapters.trace.recorder import LctTraceRecorder
    from lmcache.adapters.transport.handlers import OpHandlers
    from lmcache.adapters.transport.server import ZmqServer
    from lmcache.app.blend_wiring import BlendServer
    from lmcache.app.config import ServerConfig
    from lmcache.app.storage_loop import StorageLoop
    from lmcache.app.telemetry import Telemetry
    from lmcache.domain.eviction_loop import EvictionLoop
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.domain.sessions import SessionManager
    from lmcache.domain.store_controller import StoreController
    from lmcache.domain.supervisor import Supervisor
    from lmcache.domain.workers import WorkerRegistry
    from lmcache.ports.events import EventSink
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("ServerGraph",)


@dataclass(frozen=True, slots=True)
class ServerGraph:
    """The server's parts (module docstring); every object is the container's single instance."""

    config: ServerConfig
    l1_memory: MappedL1Memory
    l2_adapters: Sequence[L2Adapter]
    l1: L1Manager
    sessions: SessionManager
    workers: WorkerRegistry
    events: EventSink
    supervisor: Supervisor
    eviction_loop: EvictionLoop
    storage_loop: StorageLoop
    store_controller: StoreController
    coordinator_client: CoordinatorClient | None
    trace_recorder: LctTraceRecorder | None
    plugins: PluginSupervisor | None
    telemetry: Callable[[], Telemetry]
    blend: Callable[[], BlendServer | None]
    op_handlers: Callable[..., OpHandlers]  # (on_unregister=...)
    op_table: Callable[[OpHandlers], dict[str, Callable[..., Any]]]
    zmq_server: Callable[..., ZmqServer]  # (handlers=...)
    http_server: Callable[..., HttpServer]  # (engine_problem=...)
