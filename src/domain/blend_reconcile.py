"""The pure steps between candidate matches and a lookup's answer (cacheblend.md §3.4 steps 3-6, §5).

Each step is a function of plain values, so the unit tests state the contract directly: the prefix
filter, the segmented-prefix filter, the found/partial/stale classification and the overlap walk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from lmcache.domain.blend_types import BlendMatch

__all__ = ("Classified", "after_prefix", "classify", "drop_segmented", "resolve_overlaps", "unique_hashes")


def after_prefix(candidates: Sequence[BlendMatch], prefix_tokens: int) -> list[BlendMatch]:
    """Keep matches starting at or after the prefix (one starting inside it goes, even if it ends past it)."""
    return [m for m in candidates if m.cur_st >= prefix_tokens]


def drop_segmented(
    candidates: Sequence[BlendMatch], retained_chunks: Collection[int], chunk_size: int
) -> list[BlendMatch]:
    """Drop same-position matches of chunks that already ride the segmented prefix (§5)."""
    if not retained_chunks:
        return list(candidates)
    return [
        m
        for m in candidates
        if not (
            m.old_st == m.cur_st and m.cur_st % chunk_size == 0 and m.cur_st // chunk_size in retained_chunks
        )
    ]


def unique_hashes(matches: Sequence[BlendMatch]) -> list[bytes]:
    """The distinct chunk hashes of `matches`, in first-seen order."""
    return list(dict.fromkeys(m.chunk_hash for m in matches))


@dataclass(frozen=True, slots=True)
class Classified:
    """A sparse prefetch's verdict per candidate hash.

    Attributes:
        found: Hashes whose every key was loaded and locked.
        partial: Hashes present in some tier for every key but not all loaded (released, no strike).
        stale: Hashes with a key absent everywhere (struck).
    """

    found: frozenset[bytes]
    partial: frozenset[bytes]
    stale: frozenset[bytes]


def classify(
    hashes: Sequence[bytes], locked: Sequence[Sequence[bool]], available: Sequence[Sequence[bool]]
) -> Classified:
    """Classify each hash from its keys' outcomes (`locked[i]` / `available[i]`: one flag per key)."""
    found, partial, stale = set(), set(), set()
    for chunk_hash, got, there in zip(hashes, locked, available, strict=True):
        if all(got):
            found.add(chunk_hash)
        elif all(there):
            partial.add(chunk_hash)
        else:
            stale.add(chunk_hash)
    return Classified(frozenset(found), frozenset(partial), frozenset(stale))


def resolve_overlaps(found: Sequence[BlendMatch], prefix_tokens: int) -> list[BlendMatch]:
    """Drop matches inside the prefix, sort by cur_st (stable), keep each that starts after the last kept."""
    kept: list[BlendMatch] = []
    end = prefix_tokens
    for match in sorted(after_prefix(found, prefix_tokens), key=lambda m: m.cur_st):
        if match.cur_st >= end:
            kept.append(match)
            end = match.cur_ed
    return kept
