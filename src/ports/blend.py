"""CacheBlend ports: the vectorised fingerprint math, the scatter into engine blocks, the fleet directory.

The domain owns the blend semantics (what is indexed, matched, locked, scattered) in pure Python; the
work that is per token (rolling hashes over a 32k-token prompt, re-rotating and scattering KV) sits behind
these ports, so it runs as numpy/torch vector code and a GPU variant is one more adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from concurrent.futures import Future

    from lmcache.domain.arena import Extent
    from lmcache.domain.blend_types import BlendScope

__all__ = ("BlendScatter", "FingerprintProbe", "FleetMatch", "FleetMatcher", "ScatterItem", "ScatterStats")


class FingerprintProbe(Protocol):
    """Fingerprints of token windows (cacheblend.md §3.1) plus a membership pre-filter over them.

    The filter may answer "maybe" for a fingerprint it never saw (a false positive the caller's exact
    dict lookup removes) but never "no" for one that was added and not discarded.

    Threading: not thread-safe; the owner (the fingerprint index) serialises every call.

    Failure: a token id that is not an unsigned 32-bit integer raises `TokenError` (domain.hashing).
    """

    def chunk_fingerprints(self, tokens: Sequence[int], chunk_size: int) -> list[int]:
        """The fingerprint of each full, aligned chunk of `tokens` (a trailing partial chunk is ignored)."""
        ...

    def candidates(self, tokens: Sequence[int], chunk_size: int) -> tuple[list[int], list[int]]:
        """Every window position whose fingerprint may be in the filter, ascending, and its fingerprint.

        Rolls over all `len(tokens) - chunk_size + 1` windows (none when `tokens` is shorter).
        """
        ...

    def add(self, fingerprints: Iterable[int]) -> None:
        """Let the filter pass these fingerprints."""
        ...

    def discard(self, fingerprints: Iterable[int]) -> None:
        """Undo one `add` of each fingerprint."""
        ...

    def rebuild(self, fingerprints: Iterable[int], expected: int) -> None:
        """Start over with exactly these fingerprints, sized for `expected` entries."""
        ...

    @property
    def capacity(self) -> int:
        """Entries the filter holds before its false-positive rate degrades (the owner then rebuilds)."""
        ...


@dataclass(frozen=True, slots=True)
class ScatterItem:
    """One match to write: its L1 object, where it was stored and where it goes in the request."""

    extent: Extent
    old_st: int
    cur_st: int


@dataclass(frozen=True, slots=True)
class ScatterStats:
    """What a scatter did: bytes written into engine blocks and bytes of K re-rotated on the way."""

    bytes_written: int
    bytes_rotated: int


class BlendScatter(Protocol):
    """One instance's CacheBlend registration (`cb_register_rope`): writes matched chunks into its blocks.

    Threading: one instance's retrieves arrive on one affinity thread; `close` may come from any thread
    after the instance was unregistered.

    Ownership: the caller holds a read lock on every extent for the duration of `scatter`.

    Failure: `check` raises `ValueError` naming the problem (unsupported layout, a position beyond the
    cos/sin cache, a block id out of range) before anything is written; `scatter` then writes every
    token of every item or raises on an unexpected fault.
    """

    def check(self, items: Sequence[ScatterItem], block_ids: Sequence[Sequence[int]]) -> None:
        """Validate a scatter without writing anything."""
        ...

    def scatter(self, items: Sequence[ScatterItem], block_ids: Sequence[Sequence[int]]) -> ScatterStats:
        """Write token j of each item to slot `cur_st + j` of the request's block tables (from token 0).

        `block_ids[g]` is the block table of engine group g. K is re-rotated from `old_st + j` to
        `cur_st + j` where the registration says so; V and everything outside the rotary window are
        copied as they are.
        """
        ...

    def describe(self) -> Mapping[str, Any]:
        """The registration's geometry for `/status`."""
        ...

    def close(self) -> None:
        """Release the mapped cos/sin caches; idempotent."""
        ...


@dataclass(frozen=True, slots=True)
class FleetMatch:
    """One stored chunk the coordinator found in a prompt."""

    chunk_hash: bytes
    old_st: int
    cur_st: int


class FleetMatcher(Protocol):
    """The coordinator's CacheBlend directory (cacheblend.md §7, coordinator-api.md §3).

    Threading: both methods are called from request threads and return at once; the HTTP work happens
    on the adapter's own thread.

    Failure: `publish` never raises (a full queue drops and counts); a match Future fails with the
    transport error, which the caller turns into a local fallback.
    """

    timeout_s: float

    def match(self, scope: BlendScope, tokens: Sequence[int]) -> Future[list[FleetMatch]]:
        """Ask for the stored chunks of `scope` found in `tokens`."""
        ...

    def publish(
        self, scope: BlendScope, tokens: Sequence[int], chunk_hashes: Sequence[bytes], old_st_base: int
    ) -> None:
        """Announce a stored range: `tokens` stored at `old_st_base`, one chain hash per full chunk."""
        ...
