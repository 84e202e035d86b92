"""The coordinator's background work: health sweep, fleet eviction, start-up resync, checkpoints.

Each is one async step run by the `Supervisor` on its own interval (0 disables it); a step that raises is
logged, counted and run again after the supervisor's restart delay. All steps run on the coordinator's
event loop, so they share `FleetState` with the routes without locks; the only blocking work (writing a
checkpoint file) goes to a thread with a snapshot taken on the loop.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lmcache.adapters.coordinator.servers import ServerCallError
from lmcache.domain.fleet_eviction import EvictionPlan, plan_evictions
from lmcache.domain.keys import salt_alias

if TYPE_CHECKING:
    from lmcache.adapters.coordinator.checkpoint import JsonCheckpointFile
    from lmcache.adapters.coordinator.metrics import CoordinatorMetrics
    from lmcache.adapters.coordinator.servers import HttpFleetServers
    from lmcache.adapters.coordinator.settings import CoordinatorSettings
    from lmcache.domain.fleet_registry import InstanceRecord
    from lmcache.domain.fleet_state import FleetState
    from lmcache.domain.keys import ObjectKey

__all__ = ("FleetLoops",)

logger = logging.getLogger(__name__)


class FleetLoops:
    """Step functions of the coordinator's loops."""

    def __init__(
        self,
        state: FleetState,
        servers: HttpFleetServers,
        metrics: CoordinatorMetrics,
        settings: CoordinatorSettings,
        checkpoint: JsonCheckpointFile | None,
    ) -> None:
        self._state = state
        self._servers = servers
        self._metrics = metrics
        self._settings = settings
        self._checkpoint = checkpoint
        self._next_server = 0
        self._eviction_failing = False
        self.resync_done = asyncio.Event()

    async def health_step(self) -> None:
        """Drop instances whose heartbeat lapsed."""
        for instance_id in self._state.registry.expire():
            self._metrics.expired.inc()
            logger.info(
                "Instance %s missed heartbeats for %.1f s; removed",
                instance_id,
                self._state.registry.timeout_s,
            )

    def _pick_server(self) -> InstanceRecord | None:
        live = self._state.registry.live()
        if not live:
            return None
        self._next_server = (self._next_server + 1) % len(live)
        return live[self._next_server]

    async def eviction_step(self) -> None:
        """Plan one cycle and send each salt's keys to one live server; keep them on failure."""
        s = self._settings
        plans = plan_evictions(
            self._state.directory, self._state.quotas, s.trigger_watermark, s.eviction_ratio
        )
        for plan in plans:
            server = self._pick_server()
            if server is None:
                self._eviction_state(
                    False, f"no live server to evict {salt_alias(plan.cache_salt)!r} through"
                )
                return
            await self._evict(plan, server)

    async def _evict(self, plan: EvictionPlan, server: InstanceRecord) -> None:
        try:
            await self._servers.delete_keys(server.http_url, plan.keys)
        except ServerCallError as exc:
            self._metrics.evictions_failed.inc()
            self._eviction_state(False, f"DELETE /l2 on {server.instance_id} failed: {exc}")
            return
        freed = self._state.directory.forget(plan.keys)
        self._metrics.evictions_sent.inc()
        self._metrics.evicted_keys.inc(len(plan.keys))
        self._eviction_state(True, "")
        logger.info(
            "Evicted %d keys (%d bytes) of cache_salt %r through %s; usage was %d of %d bytes",
            len(plan.keys),
            freed,
            salt_alias(plan.cache_salt),
            server.instance_id,
            plan.usage_bytes,
            plan.limit_bytes,
        )

    def _eviction_state(self, ok: bool, message: str) -> None:
        if not ok and not self._eviction_failing:
            logger.warning("Fleet eviction: %s; keys kept for the next cycle", message)
        elif ok and self._eviction_failing:
            logger.info("Fleet eviction works again")
        self._eviction_failing = not ok

    async def resync(self) -> None:
        """Wait for a live server, then page its L2 keys into the directory (best effort, once)."""
        try:
            server = await self._wait_for_server()
            if server is not None:
                await self._resync_from(server)
        finally:
            self.resync_done.set()

    async def _wait_for_server(self) -> InstanceRecord | None:
        s = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.resync_max_wait
        while True:
            live = self._state.registry.live()
            if live:
                return live[0]
            if loop.time() >= deadline:
                logger.info("L2 resync: no server registered within %.0f s; skipped", s.resync_max_wait)
                return None
            await asyncio.sleep(min(s.resync_poll_interval, max(deadline - loop.time(), 0)))

    async def _resync_from(self, server: InstanceRecord) -> None:
        before = self._state.directory.keys()
        seen: set[ObjectKey] = set()
        token: str | None = None
        while True:
            try:
                items, token = await self._servers.list_keys(
                    server.http_url, self._settings.resync_page_size, token
                )
            except ServerCallError as exc:
                logger.warning("L2 resync from %s stopped: %s", server.instance_id, exc)
                return
            for key, nbytes in items:
                # A listed size may be the server's mean object size (headers included); the size a store
                # event or the checkpoint recorded is exact, so only keys not known yet take the listed one.
                if key not in self._state.directory:
                    self._state.directory.store(key, nbytes)
                seen.add(key)
            self._metrics.resynced_keys.inc(len(items))
            if token is None:
                break
        stale = before - seen  # known before the resync began, absent from the complete listing
        self._state.directory.forget(stale)
        logger.info(
            "L2 resync from %s: %d keys, %d stale keys dropped", server.instance_id, len(seen), len(stale)
        )

    async def checkpoint_step(self) -> None:
        """Write the checkpoint (snapshot on the loop, file I/O on a thread)."""
        if self._checkpoint is None:
            return
        snapshot = self._state.snapshot()
        await asyncio.to_thread(self._checkpoint.save, snapshot)
        self._metrics.checkpoints.inc()

    def load_checkpoint(self) -> None:
        """Restore quotas and the key directory from the checkpoint file, when there is one.

        Raises:
            ValueError, OSError: When the file exists but cannot be read or understood.
        """
        if self._checkpoint is None:
            return
        data = self._checkpoint.load()
        if data is None:
            logger.info("No checkpoint at %s yet; starting empty", self._checkpoint.path)
            return
        keys = self._state.restore(data)
        logger.info(
            "Loaded checkpoint %s: %d quotas, %d keys",
            self._checkpoint.path,
            len(self._state.quotas.all_gb()),
            keys,
        )
