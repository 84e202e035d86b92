"""The L1 manager's admin queries: paged listing (/cache/objects) and `retain` (coordinator prefetches)."""

from __future__ import annotations

import pytest

from ._storage import ALIGN, key, make_l1, put


def test_pages_cover_every_object_once_in_insertion_order() -> None:
    l1, _, _ = make_l1(slots=16)
    keys = [key(i) for i in range(7)]
    put(l1, *keys)
    seen = []
    cursor: int | None = 0
    while cursor is not None:
        page, cursor = l1.objects_page(cursor, 3)
        assert len(page) <= 3
        seen += [info.key for info in page]
    assert seen == keys


def test_page_reports_size_state_and_live_readers() -> None:
    l1, clock, _ = make_l1(read_ttl=300)
    ready, writing = key(1), key(2)
    put(l1, ready)
    l1.lock_read([ready], n=2)
    l1.reserve([writing], ALIGN)
    page, nxt = l1.objects_page(0, 10)
    assert nxt is None
    rows = [(i.key, i.size, i.ready, i.readers) for i in page]
    assert rows == [(ready, ALIGN, True, 2), (writing, ALIGN, False, 0)]
    clock.advance(301)  # the read locks expired: no live readers any more
    assert l1.objects_page(0, 10)[0][0].readers == 0


def test_filters_by_model_and_salt() -> None:
    l1, _, _ = make_l1()
    a, b, c = key(1, salt="t1"), key(2, model="other"), key(3)
    put(l1, a, b, c)
    assert [i.key for i in l1.objects_page(0, 10, cache_salt="t1")[0]] == [a]
    assert [i.key for i in l1.objects_page(0, 10, model_name="other")[0]] == [b]
    assert [i.key for i in l1.objects_page(0, 10, model_name="m", cache_salt="")[0]] == [c]


def test_bad_cursor_or_limit_is_refused() -> None:
    l1, _, _ = make_l1()
    with pytest.raises(ValueError, match="cursor"):
        l1.objects_page(-1, 10)
    with pytest.raises(ValueError, match="limit"):
        l1.objects_page(0, 0)


def test_retain_keeps_a_temporary_object_after_its_readers() -> None:
    l1, _, _ = make_l1()
    kept, dropped = key(1), key(2)
    l1.reserve([kept, dropped], ALIGN)
    l1.finish([kept, dropped], read_locks=1, temporary=True)
    assert l1.retain([kept, key(9)]) == 1
    l1.unlock_read([kept, dropped])
    assert l1.contains(kept)
    assert not l1.contains(dropped)
