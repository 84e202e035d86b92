"""What a blend server's `store` registers (cacheblend.md §3.2, §7): fingerprints, and the fleet publication.

Only stores of worker 0 (or a worker-less key) register: the index is shared by every rank. Only the
chunks the store newly committed are indexed (present, all-null or failed chunks are not), chunk 0 of
the sequence never (the prefix path serves it), each at `old_st = chunk index * chunk size`. It runs
synchronously after the commit and before the store's reply, so a lookup sent after the reply sees it
(LMCache registers asynchronously and drains before every match; the effect is the same).

With a coordinator, the whole stored range (`tokens[start:end]`, chunk 0 included, one chain hash per
full chunk) is also published, fire-and-forget.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from lmcache.domain.blend_types import BlendScope

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.blend_index import FingerprintIndex
    from lmcache.domain.cache_engine import RequestKey
    from lmcache.domain.keys import ObjectKey
    from lmcache.ports.blend import FleetMatcher

__all__ = ("BlendRegistrar", "consecutive_runs")
logger = logging.getLogger("lmcache.blend")


def consecutive_runs(indices: Sequence[int]) -> list[list[int]]:
    """Split ascending indices into runs of consecutive values."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] + 1 == i:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


class BlendRegistrar:
    """The cache engine's store listener on a blend server.

    Args:
        index: The local fingerprint index.
        fleet: The coordinator's directory, or None.
    """

    def __init__(self, index: FingerprintIndex, fleet: FleetMatcher | None = None) -> None:
        self.index = index
        self.fleet = fleet
        self.failures = 0

    def __call__(self, key: RequestKey, committed: list[int], keys: list[ObjectKey]) -> None:
        """Register the chunks `committed` (indices into the range's `keys`) of a finished store."""
        if key.worker_id not in (0, None):
            return
        try:
            self._register(key, committed, keys)
        except Exception:  # the store itself succeeded; a missed registration only costs a match
            self.failures += 1
            logger.exception("CacheBlend registration of %s failed", key.request_id)

    def _register(self, key: RequestKey, committed: list[int], keys: list[ObjectKey]) -> None:
        cs = self.index.chunk_size
        base = key.start // cs
        scope = BlendScope(key.model_name, key.world_size, key.cache_salt)
        for run in consecutive_runs(sorted(committed)):
            self.index.register(scope, key.token_ids, base + run[0], [keys[i].chunk_hash for i in run])
        if self.fleet is not None:
            tokens = key.token_ids[key.start : key.end]
            self.fleet.publish(scope, tokens, [k.chunk_hash for k in keys], key.start)
