"""The pure reconciliation steps of cb_unified_lookup (cacheblend.md §3.4 steps 3-6, §5, vector V3)."""

from __future__ import annotations

from lmcache.domain.blend_reconcile import (
    after_prefix,
    classify,
    drop_segmented,
    resolve_overlaps,
    unique_hashes,
)
from lmcache.domain.blend_types import BlendMatch

A, B, C = b"A", b"B", b"C"


def m(old: int, cur: int, h: bytes, cs: int = 4) -> BlendMatch:
    return BlendMatch.at(old, cur, cs, h)


def test_v3_overlap_resolution_depends_on_the_prefix() -> None:
    raw = [m(4, 2, A), m(8, 4, B)]
    assert resolve_overlaps(raw, 0) == [m(4, 2, A)]
    assert resolve_overlaps(raw, 4) == [m(8, 4, B)]


def test_overlap_walk_sorts_stably_and_keeps_adjacent_matches() -> None:
    found = [m(0, 8, C), m(4, 0, A), m(8, 4, B), m(12, 9, b"D")]
    assert resolve_overlaps(found, 0) == [m(4, 0, A), m(8, 4, B), m(0, 8, C)]


def test_a_match_starting_inside_the_prefix_is_dropped_even_if_it_ends_after() -> None:
    assert after_prefix([m(0, 6, A), m(0, 8, B)], 8) == [m(0, 8, B)]


def test_segmented_filter_drops_only_same_position_matches_of_retained_chunks() -> None:
    cands = [m(8, 8, A), m(12, 12, B), m(16, 9, C), m(20, 20, b"D")]
    assert drop_segmented(cands, {2, 3}, 4) == [m(16, 9, C), m(20, 20, b"D")]
    assert drop_segmented(cands, set(), 4) == cands


def test_classification_found_partial_stale() -> None:
    verdict = classify(
        [A, B, C, b"D"],
        [[True, True], [True, False], [False, False], [True, False]],
        [[True, True], [True, True], [True, False], [True, False]],
    )
    assert verdict.found == {A}
    assert verdict.partial == {B}
    assert verdict.stale == {C, b"D"}


def test_unique_hashes_keep_first_seen_order() -> None:
    assert unique_hashes([m(0, 4, B), m(4, 8, A), m(0, 12, B)]) == [B, A]
