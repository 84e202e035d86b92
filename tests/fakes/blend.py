"""Fakes of the CacheBlend ports: a pure-Python fingerprint probe and a recording scatter."""

from __future__ import annotations

import collections
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmcache.domain.fleet_blend import chunk_fingerprint, rolling_fingerprints
from lmcache.ports.blend import ScatterStats

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from lmcache.domain.blend_types import BlendScope
    from lmcache.ports.blend import (
        BlendScatter,
        FingerprintProbe,
        FleetMatch,
        FleetMatcher,
        ScatterItem,
    )


class FakeProbe:
    """The reference (per-token Python) hash with an exact multiset as the filter; counts its calls."""

    def __init__(self, capacity: int = 1 << 30) -> None:
        self.present: collections.Counter[int] = collections.Counter()
        self._capacity = capacity
        self.rebuilds = 0

    def chunk_fingerprints(self, tokens: Sequence[int], chunk_size: int) -> list[int]:
        n = len(tokens) // chunk_size
        return [chunk_fingerprint(tokens[i * chunk_size : (i + 1) * chunk_size]) for i in range(n)]

    def candidates(self, tokens: Sequence[int], chunk_size: int) -> tuple[list[int], list[int]]:
        fps = rolling_fingerprints(tokens, chunk_size)
        hits = [i for i, fp in enumerate(fps) if self.present[fp] > 0]
        return hits, [fps[i] for i in hits]

    def add(self, fingerprints: Iterable[int]) -> None:
        self.present.update(fingerprints)

    def discard(self, fingerprints: Iterable[int]) -> None:
        self.present.subtract(fingerprints)

    def rebuild(self, fingerprints: Iterable[int], expected: int) -> None:
        self.rebuilds += 1
        self.present = collections.Counter(fingerprints)
        self._capacity = max(self._capacity, expected)

    @property
    def capacity(self) -> int:
        return self._capacity


@dataclass
class RecordingScatter:
    """Records what it was asked to write; `fail_check` makes `check` refuse."""

    fail_check: str = ""
    fail_scatter: bool = False
    calls: list[tuple[list[ScatterItem], list[list[int]]]] = field(default_factory=list)
    closed: bool = False

    def check(self, items: Sequence[ScatterItem], block_ids: Sequence[Sequence[int]]) -> None:
        if self.fail_check:
            raise ValueError(self.fail_check)

    def scatter(self, items: Sequence[ScatterItem], block_ids: Sequence[Sequence[int]]) -> ScatterStats:
        if self.fail_scatter:
            raise RuntimeError("injected scatter fault")
        self.calls.append((list(items), [list(b) for b in block_ids]))
        return ScatterStats(100 * len(items), 50 * sum(1 for i in items if i.old_st != i.cur_st))

    def describe(self) -> Mapping[str, Any]:
        return {"fake": True}

    def close(self) -> None:
        self.closed = True


@dataclass
class FakeFleet:
    """A coordinator directory answering what the test put in `answers` (a Future the test resolves)."""

    timeout_s: float = 1.0
    queries: list[tuple[BlendScope, list[int]]] = field(default_factory=list)
    futures: list[Future[list[FleetMatch]]] = field(default_factory=list)
    published: list[tuple[BlendScope, list[int], list[bytes], int]] = field(default_factory=list)

    def match(self, scope: BlendScope, tokens: Sequence[int]) -> Future[list[FleetMatch]]:
        self.queries.append((scope, list(tokens)))
        future: Future[list[FleetMatch]] = Future()
        self.futures.append(future)
        return future

    def publish(
        self, scope: BlendScope, tokens: Sequence[int], chunk_hashes: Sequence[bytes], old_st_base: int
    ) -> None:
        self.published.append((scope, list(tokens), list(chunk_hashes), old_st_base))


_probe: FingerprintProbe = FakeProbe()
_scatter: BlendScatter = RecordingScatter()
_fleet: FleetMatcher = FakeFleet()
