"""Fleet L2 quotas and the eviction planner of the coordinator.

Quotas are kept as the `limit_gb` the user sent (GB = GiB, `units.py`) so `GET` returns the same number,
and compared in bytes. The planner is pure: for each salt that has a quota and whose usage reached
`trigger_watermark` x its limit, it picks `ceil(eviction_ratio x count)` keys from the cold end of that
salt's LRU. Salts without a quota are never planned, so a coordinator restarted with an empty quota
table cannot wipe the fleet. Sending the deletes (and forgetting the keys on success) is the caller's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lmcache.domain.keys import salt_from_alias, validate_cache_salt
from lmcache.domain.units import gb_to_bytes

if TYPE_CHECKING:
    from lmcache.domain.fleet_directory import KeyDirectory
    from lmcache.domain.keys import ObjectKey

__all__ = ("EvictionPlan", "FleetQuotas", "plan_evictions")


class FleetQuotas:
    """cache_salt -> L2 limit in GB; salts use the key spelling ("" for `_default`)."""

    def __init__(self) -> None:
        self._limits_gb: dict[str, float] = {}

    def set(self, salt: str, limit_gb: float) -> str:
        """Set or replace a quota; returns the salt as keys spell it.

        Raises:
            ValueError: When the limit is negative or not finite, or the salt is invalid.
        """
        if not math.isfinite(limit_gb) or limit_gb < 0:
            raise ValueError(f"limit_gb must be a finite number >= 0, got {limit_gb}")
        key = validate_cache_salt(salt_from_alias(salt))
        self._limits_gb[key] = float(limit_gb)
        return key

    def get_gb(self, salt: str) -> float | None:
        """The limit of `salt` in GB, None without a quota."""
        return self._limits_gb.get(salt_from_alias(salt))

    def limit_bytes(self, salt: str) -> int | None:
        """The limit of `salt` in bytes, None without a quota."""
        gb = self.get_gb(salt)
        return None if gb is None else gb_to_bytes(gb)

    def delete(self, salt: str) -> bool:
        """Remove a quota; True when there was one."""
        return self._limits_gb.pop(salt_from_alias(salt), None) is not None

    def all_gb(self) -> dict[str, float]:
        """A snapshot of every quota (key spelling -> GB)."""
        return dict(self._limits_gb)


@dataclass(frozen=True, slots=True)
class EvictionPlan:
    """The keys one eviction cycle asks a server to delete for one salt."""

    cache_salt: str
    keys: tuple[ObjectKey, ...]
    usage_bytes: int
    limit_bytes: int


def plan_evictions(
    directory: KeyDirectory, quotas: FleetQuotas, trigger_watermark: float, eviction_ratio: float
) -> list[EvictionPlan]:
    """Plan one eviction cycle.

    Args:
        directory: The key directory (read only).
        quotas: The quota table; salts absent from it are exempt.
        trigger_watermark: Fraction of the quota at which a salt is evicted, in (0, 1].
        eviction_ratio: Fraction of a salt's keys (by count) taken per cycle, in [0, 1].

    Returns:
        One plan per salt over its watermark that has keys to give, in salt order.

    Raises:
        ValueError: When a ratio is out of bounds.
    """
    if not 0 < trigger_watermark <= 1:
        raise ValueError(f"trigger_watermark must be in (0, 1], got {trigger_watermark}")
    if not 0 <= eviction_ratio <= 1:
        raise ValueError(f"eviction_ratio must be in [0, 1], got {eviction_ratio}")
    plans = []
    for salt, limit_gb in sorted(quotas.all_gb().items()):
        limit = gb_to_bytes(limit_gb)
        usage = directory.usage(salt)
        count = directory.count(salt)
        if count == 0 or usage < trigger_watermark * limit:
            continue
        n = math.ceil(eviction_ratio * count - 1e-9)  # 0.1 x 30 is 3.0000000000000004, not 4 keys
        if n > 0:
            plans.append(EvictionPlan(salt, tuple(directory.coldest(salt, n)), usage, limit))
    return plans
