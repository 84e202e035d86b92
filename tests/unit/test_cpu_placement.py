"""CopyPlacement's plans (fake CPU sets) and `pinned` on the real thread mask."""

from __future__ import annotations

import os

import pytest

from lmcache.adapters.transfer.cpu_placement import CopyPlacement, pinned


def _placement(allowed: set[int], here: int, enabled: bool = True) -> CopyPlacement:
    return CopyPlacement(enabled, allowed=lambda: allowed, current_cpu=lambda: here)


def test_two_threads_on_two_cpus_run_apart_the_caller_staying_where_it_is() -> None:
    assert _placement({0, 1}, 1).plan(2) == [frozenset({1}), frozenset({0})]
    assert _placement({0, 1}, 0).plan(2) == [frozenset({0}), frozenset({1})]


def test_helpers_get_disjoint_shares_of_the_other_cpus() -> None:
    plan = _placement(set(range(8)), 3).plan(3)
    assert plan == [frozenset({3}), frozenset({0, 2, 5, 7}), frozenset({1, 4, 6})]
    helpers = plan[1:]
    assert all(share is not None and 3 not in share for share in helpers)


def test_more_helpers_than_other_cpus_share_them_round_robin() -> None:
    assert _placement({4, 6}, 6).plan(4) == [frozenset({6}), frozenset({4}), frozenset({4}), frozenset({4})]


@pytest.mark.parametrize(
    ("placement", "threads"),
    [
        (_placement({0, 1}, 0, enabled=False), 2),  # --no-kv-copy-pin
        (_placement({5}, 5), 2),  # one allowed CPU: nothing to spread over
        (_placement({0, 1}, 0), 1),  # no helper
    ],
)
def test_placement_is_left_to_the_scheduler_when_it_cannot_help(
    placement: CopyPlacement, threads: int
) -> None:
    assert placement.plan(threads) == [None] * threads


def test_a_caller_on_a_cpu_outside_the_mask_takes_the_first_allowed() -> None:
    assert _placement({2, 3}, 9).plan(2) == [frozenset({2}), frozenset({3})]


def test_an_unreadable_mask_leaves_placement_alone() -> None:
    def refuse() -> set[int]:
        raise OSError("sched_getaffinity refused")

    assert CopyPlacement(allowed=refuse, current_cpu=lambda: 0).plan(2) == [None, None]


def test_the_default_plan_uses_this_process_cpus() -> None:
    allowed = os.sched_getaffinity(0)
    plan = CopyPlacement().plan(2)
    if len(allowed) < 2:
        assert plan == [None, None]
        return
    caller, helper = plan
    assert caller is not None and helper is not None
    assert caller | helper <= allowed and not caller & helper


def test_pinned_holds_the_thread_on_the_set_and_restores_its_own_mask() -> None:
    before = os.sched_getaffinity(0)
    cpu = min(before)
    seen: dict[str, set[int]] = {}
    with pinned(frozenset({cpu})):
        seen["inside"] = os.sched_getaffinity(0)
    assert seen["inside"] == {cpu}
    assert os.sched_getaffinity(0) == before


def test_pinned_restores_the_mask_when_the_block_raises() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError, match="copy failed"), pinned(frozenset({min(before)})):
        raise RuntimeError("copy failed")
    assert os.sched_getaffinity(0) == before


def test_a_refused_pin_runs_the_block_where_it_was() -> None:
    before = os.sched_getaffinity(0)
    ran = []
    with pinned(frozenset({1 << 20})):  # no such CPU: EINVAL
        ran.append(os.sched_getaffinity(0))
    assert ran == [before] and os.sched_getaffinity(0) == before


def test_pinned_none_changes_nothing() -> None:
    before = os.sched_getaffinity(0)
    with pinned(None):
        assert os.sched_getaffinity(0) == before
