"""Per-adapter L2 eviction: one adapter's usage and which of its objects to delete when it fills up.

The `"eviction"` sub-dict of an `--l2-adapter` JSON (`eviction_policy`, `trigger_watermark`,
`eviction_ratio`) with the adapter's capacity (`max_capacity_gb`) becomes one `L2Capacity`. It counts
the bytes of the objects the adapter holds from what was stored and deleted through it (and what its
listing showed at start-up), keeps them in a policy's order, and plans evictions:

- when usage plus the incoming bytes reaches `trigger_watermark` x capacity, `eviction_ratio` of the used
  bytes is freed, coldest first (LRU), by ARC's recency/frequency balance (ARC), or from the tenants
  furthest over their quota (IsolatedLRU, the same per-cache_salt quota table L1 uses);
- in any case at least enough is freed for the incoming objects to fit the capacity (on demand), so a
  steady stream of stores keeps landing and the newest objects are the ones kept;
- IsolatedLRU also frees what each tenant holds over its quota at every store;
- keys the caller reports as not evictable (pinned by a lookup for an in-flight prefetch) are skipped;
- `noop` never evicts: a store that does not fit is refused.

A capacity of 0 (the adapter has none, as LMCache's fs) leaves only the quota part: IsolatedLRU still frees
what tenants hold over their quotas, and nothing is refused for lack of room.

Pure bookkeeping: the L2 wrapper (adapters/storage/evicting.py) deletes the planned keys and reports back.
Not thread-safe; the storage event loop owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from lmcache.domain.eviction import EvictionPolicy
    from lmcache.domain.keys import ObjectKey

__all__ = ("L2_EVICTION_POLICIES", "L2Capacity", "L2EvictionPolicyName", "L2EvictionStats")

L2EvictionPolicyName = Literal["LRU", "ARC", "IsolatedLRU", "noop"]
L2_EVICTION_POLICIES: tuple[str, ...] = get_args(L2EvictionPolicyName)


@dataclass(frozen=True, slots=True)
class L2EvictionStats:
    """A snapshot for `/status` and metrics."""

    policy: str
    trigger_watermark: float
    eviction_ratio: float
    capacity_bytes: int
    used_bytes: int
    objects: int
    evicted_objects: int
    evicted_bytes: int
    rejected_objects: int


class L2Capacity:
    """Usage of one adapter and its eviction plan; see the module docstring.

    Args:
        policy_name: One of `L2_EVICTION_POLICIES`.
        policy: The order (`app/l2_container.l2_policy` builds the one a spec names).
        capacity_bytes: The adapter's capacity (0: none, only quotas apply).
        trigger_watermark: Usage ratio in [0, 1] at which a batch eviction starts.
        eviction_ratio: Share in [0, 1] of the used bytes one batch frees.
    """

    def __init__(
        self,
        policy_name: str,
        policy: EvictionPolicy,
        capacity_bytes: int,
        trigger_watermark: float = 0.8,
        eviction_ratio: float = 0.2,
    ) -> None:
        if capacity_bytes < 0:
            raise ValueError("L2 eviction needs a capacity >= 0 bytes")
        if not 0.0 <= trigger_watermark <= 1.0 or not 0.0 <= eviction_ratio <= 1.0:
            raise ValueError("trigger_watermark and eviction_ratio must be in [0, 1]")
        self.policy_name = policy_name
        self.policy = policy
        self.capacity_bytes = capacity_bytes
        self.trigger_watermark = trigger_watermark
        self.eviction_ratio = eviction_ratio
        self._sizes: dict[ObjectKey, int] = {}
        self.used_bytes = 0
        self.reserved_bytes = 0
        self.evicted_objects = 0
        self.evicted_bytes = 0
        self.rejected_objects = 0

    def __contains__(self, key: object) -> bool:
        return key in self._sizes

    def __len__(self) -> int:
        return len(self._sizes)

    def size_of(self, key: ObjectKey) -> int | None:
        """Bytes counted for `key`, None when it is not tracked."""
        return self._sizes.get(key)

    # -- what happened -----------------------------------------------------------------------------------
    def stored(self, key: ObjectKey, size: int) -> None:
        """`key` is now held with `size` bytes (a known key counts as a use)."""
        old = self._sizes.get(key)
        if old is not None:
            self.used_bytes += size - old
            self._sizes[key] = size
            self.policy.admit(key, size)  # re-inserted as most recently used, with its new size
            return
        self._sizes[key] = size
        self.used_bytes += size
        self.policy.admit(key, size)

    def used(self, key: ObjectKey) -> None:
        """`key` was read (a load hit)."""
        if key in self._sizes:
            self.policy.touch(key)

    def removed(self, key: ObjectKey) -> int:
        """`key` is gone (deleted by anyone); returns the bytes it had (0 if untracked)."""
        size = self._sizes.pop(key, None)
        if size is None:
            return 0
        self.used_bytes -= size
        self.policy.remove(key)
        return size

    def evicted(self, keys: Iterable[ObjectKey]) -> int:
        """Planned victims were deleted; returns their bytes."""
        freed = 0
        for key in keys:
            size = self.removed(key)
            if size:
                freed += size
                self.evicted_objects += 1
        self.evicted_bytes += freed
        return freed

    # -- decisions ---------------------------------------------------------------------------------------
    def plan(self, incoming_bytes: int, evictable: Callable[[ObjectKey], bool]) -> list[ObjectKey]:
        """Keys to delete before `incoming_bytes` of new objects are stored (see the module docstring)."""
        chosen: list[ObjectKey] = list(self.policy.quota_victims(evictable))
        if not self.capacity_bytes:
            return chosen
        picked = set(chosen)
        freed = sum(self._sizes.get(k, 0) for k in chosen)
        after = self.used_bytes + self.reserved_bytes - freed + incoming_bytes
        target = after - self.capacity_bytes  # on demand: at least what does not fit
        if after >= self.trigger_watermark * self.capacity_bytes and incoming_bytes:
            target = max(target, int((self.used_bytes - freed) * self.eviction_ratio))
        if target > 0:
            chosen += self.policy.victims(target, lambda k: k not in picked and evictable(k))
        return chosen

    def fits(self, nbytes: int) -> bool:
        """Whether `nbytes` more fit under the capacity (counting stores in flight)."""
        if not self.capacity_bytes:
            return True
        return self.used_bytes + self.reserved_bytes + nbytes <= self.capacity_bytes

    def reject(self) -> None:
        """Count a store refused for lack of room."""
        self.rejected_objects += 1

    def stats(self) -> L2EvictionStats:
        """A snapshot of the numbers."""
        return L2EvictionStats(
            self.policy_name,
            self.trigger_watermark,
            self.eviction_ratio,
            self.capacity_bytes,
            self.used_bytes,
            len(self._sizes),
            self.evicted_objects,
            self.evicted_bytes,
            self.rejected_objects,
        )
