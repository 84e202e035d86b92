"""The running coordinator: fleet state, metrics, server client and supervised loops.

The Litestar app's start-up and shutdown hooks call `start` and `stop`. The parts are built by the
coordinator's composition root (`app/coordinator_container.py`) and handed in: this class only runs them.

Start-up order: load the checkpoint (a corrupt one fails the start), then start the loops (health,
eviction, checkpoint on their intervals; resync once). Shutdown: stop the loops, write a last checkpoint,
close the HTTP client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from lmcache.adapters.coordinator.loops import FleetLoops
    from lmcache.adapters.coordinator.metrics import CoordinatorMetrics
    from lmcache.adapters.coordinator.servers import HttpFleetServers
    from lmcache.adapters.coordinator.settings import CoordinatorSettings
    from lmcache.domain.fleet_state import FleetState
    from lmcache.domain.supervisor import Supervisor

__all__ = ("CoordinatorService",)

logger = logging.getLogger(__name__)


class CoordinatorService:
    """Everything one coordinator process runs.

    Args:
        settings: Plain configuration values (the loops' intervals, the checkpoint path).
        state: The fleet's registry, directory and quotas.
        metrics: The coordinator's metrics over `state`.
        servers: The client that calls the fleet's servers back.
        loops: The health, eviction, checkpoint and resync steps.
        supervisor: Runs the loops and reports their health.
    """

    def __init__(
        self,
        settings: CoordinatorSettings,
        *,
        state: FleetState,
        metrics: CoordinatorMetrics,
        servers: HttpFleetServers,
        loops: FleetLoops,
        supervisor: Supervisor,
    ) -> None:
        self.settings = settings
        self.state = state
        self.metrics = metrics
        self.servers = servers
        self.loops = loops
        self.supervisor = supervisor
        self.prefetches: dict[tuple[str, str], dict[str, Any]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._loaded = False

    def load_checkpoint(self) -> None:
        """Restore the checkpoint once (called before serving, or by `start`).

        Raises:
            OSError, ValueError: When the checkpoint exists but cannot be read or understood.
        """
        if not self._loaded:
            self.loops.load_checkpoint()
            self._loaded = True

    def _schedule(self) -> list[tuple[str, Callable[[], Awaitable[object]], float]]:
        s = self.settings
        loops: list[tuple[str, Callable[[], Awaitable[object]], float]] = [
            ("coordinator-health", self.loops.health_step, s.health_check_interval),
            ("coordinator-eviction", self.loops.eviction_step, s.eviction_check_interval),
        ]
        if s.checkpoint_path is not None:
            loops.append(("coordinator-checkpoint", self.loops.checkpoint_step, s.checkpoint_interval))
        return loops

    async def start(self) -> None:
        """Load the checkpoint and start the loops (the app's on_startup hook)."""
        if self._started:
            return
        self._started = True
        self.load_checkpoint()
        for name, step, interval in self._schedule():
            if interval > 0:
                self.supervisor.add_async(name, step, interval)
                self._tasks.append(asyncio.create_task(self._delayed(name, interval), name=name))
        if self.settings.enable_startup_resync:
            self.supervisor.add_async("coordinator-resync", self.loops.resync, 0)
            self._tasks.append(asyncio.create_task(self._once("coordinator-resync"), name="resync"))
        else:
            self.loops.resync_done.set()

    async def _delayed(self, name: str, interval: float) -> None:
        await asyncio.sleep(interval)  # the first sweep comes one interval after start
        await self.supervisor.run_async(name)

    async def _once(self, name: str) -> None:
        await self.supervisor.run_once_async(name)

    async def stop(self) -> None:
        """Stop the loops, write a final checkpoint, close the HTTP client (the app's on_shutdown hook)."""
        self.supervisor.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.settings.checkpoint_path is not None:
            try:
                await self.loops.checkpoint_step()
                logger.info("Checkpoint written to %s", self.settings.checkpoint_path)
            except OSError:
                logger.exception("Final checkpoint to %s failed", self.settings.checkpoint_path)
        await self.servers.aclose()
