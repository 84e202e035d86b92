"""CacheBlend value types (cacheblend.md §2): a match, a lookup's answer and the namespace of an index entry.

A match says "the chunk stored at `[old_st, old_ed)` of some prompt, whose prefix-chained hash is
`chunk_hash`, reappears at `[cur_st, cur_ed)` of this prompt"; `old_ed - old_st == cur_ed - cur_st ==`
chunk size always. The wire types (`CBMatchResult`, `CBUnifiedLookupResult`) are built from these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ("BlendMatch", "BlendScope", "UnifiedLookupResult")


@dataclass(frozen=True, slots=True)
class BlendScope:
    """The namespace of a fingerprint (cacheblend.md §3.5, "Decided"): a match never crosses it."""

    model_name: str
    world_size: int
    cache_salt: str = ""

    @property
    def fleet_scope(self) -> str:
        """The coordinator's `model_scope` (`"<model>@<salt>"`; world size is not part of it, §7)."""
        return f"{self.model_name}@{self.cache_salt}"


@dataclass(frozen=True, slots=True)
class BlendMatch:
    """One stored chunk found in a prompt (`CBMatchResult`)."""

    old_st: int
    old_ed: int
    cur_st: int
    cur_ed: int
    chunk_hash: bytes

    @property
    def shifted(self) -> bool:
        """True when the chunk moves (its K must be re-rotated)."""
        return self.old_st != self.cur_st

    @classmethod
    def at(cls, old_st: int, cur_st: int, chunk_size: int, chunk_hash: bytes) -> BlendMatch:
        """A match of one chunk of `chunk_size` tokens."""
        return cls(old_st, old_st + chunk_size, cur_st, cur_st + chunk_size, chunk_hash)


@dataclass(frozen=True, slots=True)
class UnifiedLookupResult:
    """`CBUnifiedLookupResult`: the leading prefix hit and the chunks to load from elsewhere."""

    prefix_coverage_tokens: int = 0
    non_prefix_segments: tuple[BlendMatch, ...] = ()
    segmented_prefix_segments: tuple[BlendMatch, ...] = field(default=())
