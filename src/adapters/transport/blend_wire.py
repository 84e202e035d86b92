"""msgspec types of the CacheBlend payloads and replies (cacheblend.md §2, wire-protocol.md §3.3).

Field order is the wire order: a `CBUnifiedLookupResult` encodes as the 3-key map LMCache sends
(`prefix_coverage_tokens`, `non_prefix_segments`, `segmented_prefix_segments`), each match as the 5-key
map `old_st`, `old_ed`, `cur_st`, `cur_ed`, `hash` (bin).
"""

from __future__ import annotations

import msgspec

from lmcache.domain.blend_types import BlendMatch, UnifiedLookupResult

__all__ = ("CB_LOOKUP_FAILURE", "CBMatchResult", "CBUnifiedLookupResult", "from_domain", "to_domain")


class CBMatchResult(msgspec.Struct):
    """One matched chunk."""

    old_st: int
    old_ed: int
    cur_st: int
    cur_ed: int
    hash: bytes


class CBUnifiedLookupResult(msgspec.Struct):
    """`cb_unified_lookup`'s answer."""

    prefix_coverage_tokens: int
    non_prefix_segments: list[CBMatchResult]
    segmented_prefix_segments: list[CBMatchResult] = msgspec.field(default_factory=list)


CB_LOOKUP_FAILURE = CBUnifiedLookupResult(0, [], [])


def _wire(m: BlendMatch) -> CBMatchResult:
    return CBMatchResult(m.old_st, m.old_ed, m.cur_st, m.cur_ed, m.chunk_hash)


def from_domain(result: UnifiedLookupResult) -> CBUnifiedLookupResult:
    """The wire form of a lookup's answer."""
    return CBUnifiedLookupResult(
        result.prefix_coverage_tokens,
        [_wire(m) for m in result.non_prefix_segments],
        [_wire(m) for m in result.segmented_prefix_segments],
    )


def to_domain(matches: list[CBMatchResult]) -> list[BlendMatch]:
    """Decoded matches as domain values."""
    return [BlendMatch(m.old_st, m.old_ed, m.cur_st, m.cur_ed, bytes(m.hash)) for m in matches]
