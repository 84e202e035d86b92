"""Replaying recorded storage-engine calls against a fresh engine, for `lmcache trace replay|sweep`.

The engine is the server's own domain code (`L1Manager`, `EvictionLoop`, the eviction policies, the
quota table) on a `ReplayClock` that each call sets to its recorded time, so lock TTLs expire as they did
live. Plain L1 calls are re-run as recorded. Composite calls are re-decided by this engine:

- an eviction-loop step runs `EvictionLoop.step` (its watermark and target come from the replayed state);
- a lookup locks the L1 hits, "loads" the next objects of the leading run from the simulated L2 (the keys
  the trace submitted to L2, when the configuration has L2 adapters; loads never fail), and keeps
  `num_kv_readers` locks on the prefix, as `PrefetchController` does. When the record carries the live
  prefix, the locks past it are released at once (the recorded unlocks only release what the live engine
  kept), and chunks the live engine served but this one lacks are written back, as the engine would have
  recomputed and stored them. At the recorded configuration both rules change nothing, so the replay
  reproduces the live lookups exactly; at other sizes they keep locks from leaking and misses from being
  counted twice.

0.5.6 traces map onto the same operations (reserve_write, finish_write, submit_prefetch_task,
read_prefetched_results, finish_read_prefetched); they carry no eviction-loop steps, so `synthetic_steps`
runs one every 0.1 s of trace time. The simulated L2 serves an object from the record of the adapter
store that wrote it (or, in traces without such records, from its submission); L2 capacity, deletions
and load failures are not modelled, and a store that completes while a lookup of the same object waits
on L2 may be seen by the replay's lookup where the live one missed it. Likewise an eviction-loop step that
ran while a lookup waited on its L2 loads is replayed before or after the whole lookup, so which later
hits come from L1 and which from L2 can differ by a few objects.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.domain.events import EvictionReason
from lmcache.domain.trace_stats import ReplayClock, ReplayStats

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.eviction import EvictionPolicyName
    from lmcache.domain.eviction_loop import EvictionLoop
    from lmcache.domain.keys import ObjectKey
    from lmcache.domain.l1_manager import L1Manager
    from lmcache.domain.quotas import QuotaTable

__all__ = ("ReplayClock", "ReplayEngine", "ReplaySettings", "ReplayStats")

STEP_PERIOD_S = 0.1  # the server's eviction loop period (runtime.py)


@dataclass(frozen=True, slots=True)
class ReplaySettings:
    """The engine a replay runs on (the recorded configuration, or flag overrides)."""

    l1_bytes: int
    eviction_policy: EvictionPolicyName = "LRU"
    align_bytes: int = 4096
    trigger_watermark: float = 0.8
    eviction_ratio: float = 0.2
    write_ttl_s: float = 600.0
    read_ttl_s: float = 300.0
    prefetch_policy: str = "default"
    store_policy: str = "default"
    l2: bool = False
    synthetic_steps: bool = False


class ReplayEngine:
    """A fresh storage engine plus the handlers of every replayable operation.

    Built by `app/replay_container.py` from `settings`: an L1 on `clock` whose events `stats` counts,
    with its eviction loop and quota table.
    """

    def __init__(
        self,
        settings: ReplaySettings,
        l1: L1Manager,
        loop: EvictionLoop,
        clock: ReplayClock,
        quotas: QuotaTable,
        stats: ReplayStats,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.clock = clock
        self.quotas = quotas
        self.arena = l1.arena
        self.l1 = l1
        self.loop = loop
        self.l2: set[ObjectKey] = set()  # stored in L2 (loadable)
        self.l2_submitted: set[ObjectKey] = set()  # queued for L2 (loadable when stores are not recorded)
        self._l2_stores_recorded = False
        self._next_step = 0.0
        self._reads: dict[tuple[ObjectKey, ...], list[list[ObjectKey]]] = {}

    # ------------------------------------------------------------------ time and usage
    def at(self, t: float) -> None:
        """Move the replay clock to a record's time (synthetic eviction steps run on the way)."""
        if t > self.clock.now:
            self.clock.now = t
        if self.settings.synthetic_steps and t >= self._next_step:
            self._next_step = t + STEP_PERIOD_S
            self.loop.step()

    def note_usage(self) -> None:
        """Track the peak of used L1 bytes (called after each state-changing call)."""
        used = self.arena.used_bytes
        if used > self.stats.peak_used_bytes:
            self.stats.peak_used_bytes = used

    # ------------------------------------------------------------------ plain L1 calls
    def reserve(self, keys: list[ObjectKey], sizes: int | list[int]) -> None:
        """`L1Manager.reserve`."""
        self.l1.reserve(keys, sizes)

    def finish(self, keys: list[ObjectKey], read_locks: int = 0, temporary: bool = False) -> None:
        """`L1Manager.finish` (the counter sees what was committed)."""
        self.l1.finish(keys, read_locks, temporary)

    def read(self, key: ObjectKey) -> None:
        """`L1Manager.extent`: a reader reaching an object's bytes."""
        extent = self.l1.extent(key)
        self.stats.reads += 1
        if extent is None:
            self.stats.read_misses += 1
        else:
            self.stats.read_bytes += extent.size

    def mark_temporary(self, keys: list[ObjectKey], reason: str) -> None:
        """`L1Maintenance.mark_temporary`."""
        self.l1.mark_temporary(keys, EvictionReason(reason))

    def evict(self, target_bytes: int, reason: str = "watermark") -> None:
        """`L1Maintenance.evict` as recorded (an admin eviction; loop evictions come as steps)."""
        self.l1.evict(target_bytes, EvictionReason(reason))

    def step(self) -> None:
        """An eviction-loop step, re-decided on this engine's state."""
        self.loop.step()

    def l2_submit(self, keys: list[ObjectKey]) -> None:
        """Keys queued for L2 (loadable at once if the trace records no adapter stores)."""
        self.l2_submitted.update(keys)

    def l2_store(self, keys: list[ObjectKey]) -> None:
        """Keys an L2 adapter stored: loadable by later lookups when L2 is simulated."""
        self._l2_stores_recorded = True
        self.l2.update(keys)

    def _in_l2(self, key: ObjectKey) -> bool:
        return key in self.l2 or (not self._l2_stores_recorded and key in self.l2_submitted)

    def quota_set(self, salt: str, limit_bytes: int) -> None:
        """`QuotaTable.set` (an invalid recorded quota is ignored)."""
        with contextlib.suppress(ValueError):
            self.quotas.set(salt, limit_bytes)

    def dropped(self, count: int) -> None:
        """The recorder dropped `count` records here: the replay is not exact past this point."""
        self.stats.dropped_records += count

    # ------------------------------------------------------------------ lookups
    def lookup(
        self,
        rows: Sequence[Sequence[ObjectKey]],
        object_sizes: Sequence[int],
        readers: int,
        live_prefix: int | None = None,
    ) -> int:
        """A lookup's prefetch (module docstring); returns its prefix in chunks."""
        nrows = len(rows)
        ncols = len(rows[0]) if nrows else 0
        if nrows == 0 or ncols == 0 or len(object_sizes) != nrows or any(len(r) != ncols for r in rows):
            self.stats.lookups += 1
            self.stats.per_lookup.append(0)
            return 0
        keys = list(rows[0]) if nrows == 1 else [rows[r][c] for c in range(ncols) for r in range(nrows)]
        readers = max(1, readers)
        hits = self.l1.lock_read(keys, readers)
        prefix, loadable = ncols, []
        for i, hit in enumerate(hits):
            if not hit:
                if self.settings.l2 and self._in_l2(keys[i]):
                    loadable.append(i)
                else:
                    prefix = i // nrows
                    break
        loaded = self._load(keys, loadable, nrows, object_sizes, readers, prefix)
        prefix = loaded[1]
        keep = prefix if live_prefix is None else min(prefix, live_prefix)
        loaded_set = set(loaded[0])
        past = [keys[i] for i in range(keep * nrows, len(keys)) if hits[i] or i in loaded_set]
        if past:
            self.l1.unlock_read(past, readers)
        if live_prefix is not None and prefix < live_prefix <= ncols:
            self._write_back(keys[prefix * nrows : live_prefix * nrows], nrows, object_sizes)
        self._count_lookup(hits, loaded_set, prefix, ncols, nrows, object_sizes)
        return prefix

    def lookup_and_fill(self, keys: list[ObjectKey], object_bytes: int) -> int:
        """One lookup of a lookup-hash log; returns its prefix in chunks.

        The engine reads the prefix and recomputes the rest, then stores every chunk L1 lacks. A lookup's
        read locks are released by its retrieve before anything else happens here, so they reduce to the
        LRU refresh of every hit (what `lock_read` does) and are not taken.
        """
        l1 = self.l1
        prefix = l1.prefix_len(keys)
        l1.touch(keys)
        extents = l1.reserve(keys, object_bytes)  # present keys answer None: only the misses are written
        written = [k for k, e in zip(keys, extents, strict=True) if e is not None]
        if written:
            l1.finish(written)
            if self.settings.l2:
                self.l2.update(written)
        stats = self.stats
        stats.lookups += 1
        stats.lookup_chunks += len(keys)
        stats.hit_chunks += prefix
        stats.lookup_bytes += len(keys) * object_bytes
        stats.hit_bytes += prefix * object_bytes
        stats.l1_hit_objects += prefix
        stats.per_lookup.append(prefix)
        return prefix

    def _load(
        self,
        keys: list[ObjectKey],
        loadable: list[int],
        nrows: int,
        sizes: Sequence[int],
        readers: int,
        prefix: int,
    ) -> tuple[list[int], int]:
        """Reserve and commit the L2 objects of the leading run; returns (loaded positions, prefix)."""
        wanted = [i for i in loadable if i // nrows < prefix]
        if not wanted:
            return [], prefix
        extents = self.l1.reserve([keys[i] for i in wanted], [sizes[i % nrows] for i in wanted])
        for i, extent in zip(wanted, extents, strict=True):
            if extent is None:
                prefix = min(prefix, i // nrows)
        got = [i for i, e in zip(wanted, extents, strict=True) if e is not None]
        late = [keys[i] for i in got if i // nrows >= prefix]
        if late:
            self.l1.abort(late)
        good = [i for i in got if i // nrows < prefix]
        temporary = self.settings.prefetch_policy == "default"
        committed = self.l1.finish([keys[i] for i in good], readers, temporary=temporary)
        loaded = [i for i, ok in zip(good, committed, strict=True) if ok]
        return loaded, prefix

    def _write_back(self, keys: list[ObjectKey], nrows: int, sizes: Sequence[int]) -> None:
        """Store what the live engine served but this one lacked (the engine recomputes and stores it).

        `keys` start at a column boundary, so position `i` belongs to row `i % nrows`.
        """
        missing = [i for i, k in enumerate(keys) if not self.l1.contains(k)]
        if not missing:
            return
        chosen = [keys[i] for i in missing]
        if self.settings.l2:
            self.l2.update(chosen)  # the store controller would push them to L2 too
            if self.settings.store_policy == "skip_l1":
                return
        extents = self.l1.reserve(chosen, [sizes[i % nrows] for i in missing])
        done = [k for k, e in zip(chosen, extents, strict=True) if e is not None]
        self.stats.written_back += len(done)
        self.l1.finish(done)

    def _count_lookup(
        self,
        hits: list[bool],
        loaded: set[int],
        prefix: int,
        ncols: int,
        nrows: int,
        sizes: Sequence[int],
    ) -> None:
        stats = self.stats
        row_bytes = sum(sizes)
        stats.lookups += 1
        stats.lookup_chunks += ncols
        stats.hit_chunks += prefix
        stats.lookup_bytes += ncols * row_bytes
        stats.hit_bytes += prefix * row_bytes
        l1 = sum(hits[: prefix * nrows])
        stats.l1_hit_objects += l1
        stats.l2_hit_objects += prefix * nrows - l1
        stats.per_lookup.append(prefix)

    # ------------------------------------------------------------------ 0.5.6 reads
    def read_enter(self, keys: list[ObjectKey]) -> None:
        """0.5.6 `read_prefetched_results.__enter__`: read every key; remember what a failed read holds."""
        present = []
        for key in keys:
            self.read(key)
            if self.l1.readers(key) > 0:
                present.append(key)
        failed = len(present) != len(keys)
        self._reads.setdefault(tuple(keys), []).append(present if failed else [])

    def read_exit(self, keys: list[ObjectKey]) -> None:
        """0.5.6 `read_prefetched_results.__exit__`: a failed read releases the locks it held."""
        pending = self._reads.get(tuple(keys))
        if not pending:
            return
        held = pending.pop(0)
        if not pending:
            del self._reads[tuple(keys)]
        if held:
            self.l1.unlock_read(held, 1)
