"""fault_inject: wraps another adapter and drops loads or fails stores on purpose (tests, chaos drills).

Decisions are deterministic, so a failing run can be replayed:

- `load_drop_rate` / `store_fail_rate`: a key is hit when blake3(seed, op, key name) falls below the
  rate. The choice depends on the key and seed only, not on timing or call order.
- `drop_load_indices`: 0-based sequence numbers of object loads to drop, counted across calls in
  the order keys are asked for (the prefetch controller loads a request's chunks in order, so for one
  request these are its chunk indices).
- `fail_all_stores`: every store fails.
- `gap_indices` / `gap_tail_ratios` (LMCache's names and meaning): positions in a load batch whose loads
  are dropped, from the head (0-based) or as the distance from the tail over the batch length
  (`round((1 - ratio) * (n - 1))`: 0 is the last, 1 the first). LMCache's batch is the keys one lookup
  will load from this adapter; here a prefetch loads key by key, so the position and batch length of
  each key are taken from the lookup: the keys it found present, in the order asked (for one row, the
  request's L2 chunks in token order). Positions are kept for the keys of recent lookups only
  (`_MAX_POSITIONS`), and a load uses its key's position once.

A dropped load answers False without touching the inner adapter (the lookup still says present, so the
engine's recompute path is exercised); a failed store is not forwarded. `counters` is the inner
adapter's, so the breaker watches the real backend; `faults` counts what was injected here.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any, TypeVar

import blake3

from lmcache.adapters.storage._adapter_mixins import Forwarding
from lmcache.adapters.storage._adapter_state import AdapterCounters
from lmcache.adapters.storage.object_format import key_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.l2_adapter import L2Adapter

__all__ = ("FaultInjectL2Adapter",)

logger = logging.getLogger(__name__)
_MAX_POSITIONS = 65_536
_T = TypeVar("_T")


class FaultInjectL2Adapter(Forwarding):
    """Fault-injecting wrapper around `adapter` (already built by the factory)."""

    def __init__(
        self,
        adapter: L2Adapter,
        seed: int = 0,
        load_drop_rate: float = 0.0,
        drop_load_indices: Sequence[int] = (),
        store_fail_rate: float = 0.0,
        fail_all_stores: bool = False,
        gap_indices: Sequence[int] = (),
        gap_tail_ratios: Sequence[float] = (),
        shared: bool = False,
        eviction: dict[str, Any] | None = None,
        persist_enabled: bool = True,
    ) -> None:
        self.inner = adapter
        self.seed = seed
        self.load_drop_rate = load_drop_rate
        self.drop_load_indices = frozenset(drop_load_indices)
        self.store_fail_rate = store_fail_rate
        self.fail_all_stores = fail_all_stores
        self.gap_indices = frozenset(gap_indices)
        self.gap_tail_ratios = tuple(gap_tail_ratios)
        self.faults: Counter[str] = Counter()
        self._loads_seen = 0
        self._positions: dict[ObjectKey, tuple[int, int]] = {}  # key -> (position, batch length)

    @property
    def counters(self) -> AdapterCounters:
        """The inner adapter's counters (a fresh set when it keeps none)."""
        counters = getattr(self.inner, "counters", None)
        return counters if isinstance(counters, AdapterCounters) else AdapterCounters()

    def _hit(self, op: str, key: ObjectKey, rate: float) -> bool:
        if rate <= 0:
            return False
        digest = blake3.blake3(f"{self.seed}\0{op}\0{key_name(key)}".encode()).digest()
        return int.from_bytes(digest[:8], "little") < rate * 2.0**64

    def drops_load(self, key: ObjectKey, index: int) -> bool:
        """Whether the load of `key`, the `index`-th object load, is dropped."""
        return (
            index in self.drop_load_indices
            or self._in_gap(self._positions.pop(key, None))
            or self._hit("load", key, self.load_drop_rate)
        )

    def _in_gap(self, position: tuple[int, int] | None) -> bool:
        if position is None:
            return False
        index, length = position
        if index in self.gap_indices:
            return True
        return any(round((1.0 - ratio) * (length - 1)) == index for ratio in self.gap_tail_ratios)

    def _remember_positions(self, keys: Sequence[ObjectKey], present: Sequence[bool]) -> None:
        if not (self.gap_indices or self.gap_tail_ratios):
            return
        found = [key for key, ok in zip(keys, present, strict=False) if ok]
        for index, key in enumerate(found):
            self._positions.pop(key, None)
            self._positions[key] = (index, len(found))
        while len(self._positions) > _MAX_POSITIONS:
            del self._positions[next(iter(self._positions))]

    def fails_store(self, key: ObjectKey) -> bool:
        """Whether a store of `key` is failed."""
        return self.fail_all_stores or self._hit("store", key, self.store_fail_rate)

    async def store(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Forward the keys not chosen to fail."""
        keep = [i for i, key in enumerate(keys) if not self.fails_store(key)]
        self.faults["store"] += len(keys) - len(keep)
        return await _forward_kept(self.inner.store, keys, buffers, keep, False)

    async def lookup_and_lock(self, keys: Sequence[ObjectKey]) -> list[bool]:
        """Forwarded; with gap positions configured, the batch positions of the hits are remembered."""
        present = await self.inner.lookup_and_lock(keys)
        self._remember_positions(keys, present)
        return present

    async def load(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bool]:
        """Forward the keys not chosen to be dropped."""
        return await _forward_kept(self.inner.load, keys, buffers, self._kept_loads(keys), False)

    async def load_sized(self, keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[int | None]:
        """As `load`, for an inner adapter that loads objects of varying size (serde underneath)."""
        sized = self.inner.load_sized  # type: ignore[attr-defined]
        return await _forward_kept(sized, keys, buffers, self._kept_loads(keys), None)

    def _kept_loads(self, keys: Sequence[ObjectKey]) -> list[int]:
        first = self._loads_seen
        self._loads_seen += len(keys)
        keep = [i for i, key in enumerate(keys) if not self.drops_load(key, first + i)]
        if len(keep) < len(keys):
            self.faults["load"] += len(keys) - len(keep)
            logger.info("fault_inject: dropped %d of %d loads", len(keys) - len(keep), len(keys))
        return keep

    async def close(self) -> None:
        """Close the inner adapter."""
        await self.inner.close()


async def _forward_kept(
    call: Callable[[list[ObjectKey], list[memoryview]], Awaitable[list[_T]]],
    keys: Sequence[ObjectKey],
    buffers: Sequence[memoryview],
    keep: list[int],
    miss: _T,
) -> list[_T]:
    """`call` on the batch positions in `keep` only; the others (the injected faults) answer `miss`."""
    out = [miss] * len(keys)
    if keep:
        results = await call([keys[i] for i in keep], [buffers[i] for i in keep])
        for i, result in zip(keep, results, strict=True):
            out[i] = result
    return out
