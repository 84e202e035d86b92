"""The server's lifecycle: start the services in dependency order, serve, drain and release on a signal.

Start: L1 memory, L2 adapters, telemetry (event bus, --prometheus-port), the storage loop (store
controller), supervised loops (eviction, TTL reaping, session expiry, worker reaper), then the ZMQ server,
then the HTTP frontend, then the ready line. Stop (SIGTERM/SIGINT): stop the HTTP frontend, stop reading
requests and let in-flight ones finish, stop the loops, flush L2 stores, close adapters, stop telemetry
(delivering queued events) and free L1 (unlinking the SHM pool we created). Engines' own segments are
only unmapped, never unlinked.

The runtime decides order only: what is built, and which implementation, is the container's
(`container.py`), which hands over one `ServerGraph`; the runtime never sees a provider.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from typing import TYPE_CHECKING, Any

from lmcache.adapters import lazy_torch
from lmcache.app import runtime_extras
from lmcache.app.fleet_membership import start_fleet_membership, stop_fleet_membership
from lmcache.app.http_frontend import start_http_frontend
from lmcache.app.inert_flags import Facts, warn_ineffective_flags
from lmcache.app.l2_memory import attach_l1_memory
from lmcache.domain.events import WorkerReaped

if TYPE_CHECKING:
    from lmcache.adapters.http.server import HttpServer
    from lmcache.adapters.transport.handlers import OpHandlers
    from lmcache.adapters.transport.server import ZmqServer
    from lmcache.app.blend_wiring import BlendServer
    from lmcache.app.server_graph import ServerGraph
    from lmcache.app.telemetry import Telemetry

__all__ = ("ServerRuntime",)
logger = logging.getLogger("lmcache.runtime")


def _torch_device() -> str:
    """The device the server's copies run on, named as LMCache's start-up line names it (quick start)."""
    if lazy_torch.cuda_available():
        cuda = lazy_torch.load().cuda
        index = cuda.current_device()
        return f"cuda:{index} ({cuda.get_device_name(index)})"
    return "StubCPUDevice(device_type=cpu)"


class ServerRuntime:
    """Owns the running server built from the container's graph."""

    def __init__(self, graph: ServerGraph) -> None:
        self.g = graph
        self.config = graph.config
        self.stopped = threading.Event()
        self.server: ZmqServer | None = None
        self.handlers: OpHandlers | None = None
        self.http: HttpServer | None = None
        self.telemetry: Telemetry | None = None
        self.blend: BlendServer | None = None
        self._closed = False
        self._previous_handlers: dict[int, Any] = {}

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        """Build and start everything; raises on a start-up failure (after undoing what started)."""
        g, cfg = self.g, self.config
        # Copies are ~512 KiB each: torch's intra-op threads only add wake-up latency, and an engine shares
        # these cores. Parallelism comes from --max-gpu-workers instead (benchmarks/data_path.py).
        lazy_torch.configure(threads=1)  # applied when torch loads, before any copy
        runtime_extras.start_trace(g.trace_recorder)
        memory = g.l1_memory
        logger.info(
            "torch_dev=%s, L1 %.2f GiB, transfer modes: %s",
            _torch_device(),
            cfg.l1.l1_size_gb,
            cfg.mp.supported_transfer_mode,
        )
        warn_ineffective_flags(
            cfg, Facts(lazy_torch.cuda_available(), memory.kind)
        )  # one line per inert flag
        try:
            attach_l1_memory(g.l2_adapters, memory)  # native clients register the arena once
            self.telemetry = g.telemetry()  # event bus and --prometheus-port, before any request
            self.blend = g.blend()  # None without --engine-type blend; subscribes before the bus starts
            self.telemetry.start()
            self.handlers = g.op_handlers(on_unregister=self._on_unregister)
            table = g.op_table(self.handlers)  # with the cb_* ops on a blend server
            if self.blend is not None:
                self.blend.start()
            self._start_loops()
            self.server = g.zmq_server(handlers=table)
            self.telemetry.watch_transport(self.server)
            self.server.start()
            self.http = start_http_frontend(g.http_server(engine_problem=self._engine_problem), cfg.http)
            start_fleet_membership(g.coordinator_client)  # the coordinator calls our HTTP port back
        except BaseException:
            self.close()
            raise
        self._install_signal_handlers()  # before the ready line: a client may signal as soon as it reads it
        # Everything built so far (litestar, pydantic, the object graph: ~230k objects) lives as long as the
        # server; left in the collector's generations, each full collection walks them all and stops every
        # thread for 50-300 ms in the middle of some request. Frozen, a full collection takes microseconds.
        gc.freeze()
        logger.info(
            "LMCache cache server is running on %s (HTTP frontend on %s)", self.server.endpoint, self.http.url
        )
        logger.info("LMCache cache server is running...")
        lazy_torch.preload(then=gc.freeze)  # after readiness: ~1 s (lazy_torch.py); its objects frozen too
        memory.start_populating()  # after readiness: backing a large L1 takes seconds
        runtime_extras.start_plugins(g.plugins)

    def _start_loops(self) -> None:
        g = self.g
        sup, l1, sessions, workers = g.supervisor, g.l1, g.sessions, g.workers
        sup.add("eviction", g.eviction_loop.step, 0.1)
        sup.add("l1_ttl_reaper", l1.reap_expired, 1.0)
        sup.add("session_expiry", sessions.expire, 60.0)
        if workers.reap_timeout_s > 0:
            sup.add("worker_reaper", self._reap_workers, workers.interval_s)
        if self.blend is not None:
            sup.add("blend_expiry", self.blend.expire, 60.0)
        loop = g.storage_loop
        loop.start()
        sup.add_async("l2_store", g.store_controller.run, 0.0)
        loop.submit(sup.run_async("l2_store"))
        sup.start()

    def _reap_workers(self) -> None:
        engine_driven = self.handlers.engine_driven if self.handlers is not None else None
        for worker in self.g.workers.reap():
            logger.warning("Reaped silent worker %d (%s)", worker.instance_id, worker.model_name)
            self.g.events.publish(WorkerReaped(worker.instance_id, worker.model_name))
            if worker.transfer is not None:
                worker.transfer.close()
            if engine_driven is not None and worker.kind == "engine_driven":
                engine_driven.unregister(worker.instance_id)
            self._on_unregister(worker.instance_id)

    def _engine_problem(self) -> str | None:
        """Why the engine does not serve (shown by /healthcheck), or None while it does."""
        if self._closed:
            return "the server is shutting down"
        if self.server is None or not self.server.alive:
            return "the ZMQ server is not running"
        return None

    def _on_unregister(self, instance_id: int) -> None:
        if self.blend is not None:
            self.blend.on_unregister(instance_id)
        if self.server is not None:
            self.server.close_stream(instance_id)
        ended = self.g.sessions.end_instance(instance_id)  # else they linger until the session TTL
        if ended:
            logger.info("Ended %d session(s) of instance %d", len(ended), instance_id)

    # ------------------------------------------------------------------- stop
    def _install_signal_handlers(self) -> None:
        if not self._previous_handlers and threading.current_thread() is threading.main_thread():
            self._previous_handlers = {
                s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)
            }

    def serve_forever(self) -> int:
        """Block until SIGTERM/SIGINT, then shut down; returns the exit status (0)."""
        self._install_signal_handlers()
        try:
            while not self.stopped.wait(0.5):
                pass
        finally:
            for sig, handler in self._previous_handlers.items():
                signal.signal(sig, handler)
            self._previous_handlers = {}
            self.close()
        return 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        logger.info("Received %s; draining in-flight requests", signal.Signals(signum).name)
        self.stopped.set()

    def _stop_blend(self) -> None:
        if self.blend is not None:
            self.blend.stop()

    def close(self) -> None:
        """Drain and release everything that was started; idempotent."""
        if self._closed:
            return
        self._closed = True
        g = self.g
        runtime_extras.stop_plugins(g.plugins)
        stop_fleet_membership(g.coordinator_client)  # deregister while our HTTP port still answers
        if self.http is not None:  # first: no admin request races the teardown below
            self.http.stop()
            self.http = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        g.supervisor.stop()
        self._stop_blend()
        loop = g.storage_loop
        try:
            if loop.started:
                loop.submit(g.store_controller.drain()).result(30)
        except Exception as exc:
            logger.warning("L2 stores still queued at shutdown were not flushed: %r", exc)
        for worker in g.workers.workers():
            g.workers.remove(worker.instance_id)
            if worker.transfer is not None:
                worker.transfer.close()
        for adapter in g.l2_adapters:
            try:
                if loop.started:
                    loop.submit(adapter.close()).result(30)
                else:
                    asyncio.run(adapter.close())
            except Exception:
                logger.exception("closing L2 adapter %s", type(adapter).__name__)
        loop.stop()
        runtime_extras.close_trace(g.trace_recorder)
        if self.telemetry is not None:  # after the L2 flush, so its events are still delivered
            self.telemetry.stop()
        g.l1_memory.close()
        logger.info("LMCache cache server stopped")
