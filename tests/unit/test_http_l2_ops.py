"""The HTTP frontend's L2 helpers: deleting around reader pins, listing capability, filtered pages."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.adapters.http.l2_ops import (
    BadPageToken,
    can_list_keys,
    delete_unlocked,
    list_keys_page,
    usage_all,
)
from lmcache.adapters.http.services import HttpServices, HttpSettings
from lmcache.adapters.http.storage_calls import delete_from_l2
from lmcache.adapters.storage._adapter_state import LockTable
from lmcache.adapters.storage.resilience import ResilientL2Adapter
from lmcache.domain.events import L2Deleted
from tests.fakes.events import RecordingEventSink
from tests.fakes.l2_adapter import FakeL2Adapter

from ._storage import key

if TYPE_CHECKING:
    from collections.abc import Coroutine
    from concurrent.futures import Future

    from lmcache.domain.keys import ObjectKey


class PinnedFake(FakeL2Adapter):
    """A fake with the built-in adapters' pins: a LockTable answered through `is_locked`."""

    def __init__(self) -> None:
        super().__init__()
        self._locks = LockTable()

    def is_locked(self, k: ObjectKey) -> bool:
        return self._locks.is_locked(k)


class ProbedFake(FakeL2Adapter):
    """A fake that answers pins through a public `is_locked`."""

    def is_locked(self, k: object) -> bool:
        return self.locks[k] > 0  # type: ignore[index]


class UnlistableFake(FakeL2Adapter):
    can_list_keys = False


async def test_delete_skips_pinned_keys_through_the_resilience_wrapper() -> None:
    inner = PinnedFake()
    a, b, c = key(1), key(2), key(3)
    inner.objects.update({a: b"x", b: b"y"})
    inner._locks.lock([a], [True])
    report = await delete_unlocked(ResilientL2Adapter(inner), [a, b, c, b])
    assert (report.deleted, report.missing, report.locked) == (1, 1, 1)
    assert report.removed == (b,)  # only what was actually deleted (reported to the coordinator)
    assert set(inner.objects) == {a}
    inner._locks.unlock([a])
    assert (await delete_unlocked(ResilientL2Adapter(inner), [a])).deleted == 1


async def test_delete_uses_a_public_lock_probe() -> None:
    adapter = ProbedFake()
    a, b = key(1), key(2)
    adapter.objects.update({a: b"x", b: b"y"})
    await adapter.lookup_and_lock([a])
    report = await delete_unlocked(adapter, [a, b])
    assert (report.deleted, report.locked) == (1, 1)
    assert set(adapter.objects) == {a}


async def test_delete_without_any_pin_information_deletes_everything_present() -> None:
    adapter = FakeL2Adapter()
    adapter.objects[key(1)] = b"x"
    report = await delete_unlocked(adapter, [key(1), key(2)])
    assert (report.deleted, report.missing, report.locked) == (1, 1, 0)
    assert report.removed == (key(1),)


def test_listing_capability_is_read_along_the_wrapper_chain() -> None:
    assert can_list_keys(ResilientL2Adapter(FakeL2Adapter()))
    assert not can_list_keys(ResilientL2Adapter(UnlistableFake()))
    assert not can_list_keys(UnlistableFake())


async def test_listing_filters_a_page_and_reports_the_mean_object_size() -> None:
    adapter = FakeL2Adapter()
    adapter.objects.update(
        {key(1, salt="a"): b"x" * 10, key(2, salt="b"): b"x" * 30, key(3, salt="a"): b"xx"}
    )
    page = await list_keys_page(adapter, None, 2, lambda k: k.cache_salt == "b")  # the fake sorts by salt
    assert page.mean_bytes == 14
    assert page.keys == [] and page.next_token == "14.2"  # a filtered page may be empty, yet not the last
    adapter.raise_on.add("usage")  # later pages carry the mean in their token: no usage call
    rest = await list_keys_page(adapter, page.next_token, 2, lambda k: k.cache_salt == "b")
    assert rest.keys == [key(2, salt="b")] and rest.next_token is None and rest.mean_bytes == 14
    for bad in ("2", "x.2", "14.", ".2"):
        with pytest.raises(BadPageToken):
            await list_keys_page(adapter, bad, 2)


async def test_usage_of_a_failing_adapter_is_none() -> None:
    good, bad = FakeL2Adapter(), FakeL2Adapter()
    bad.raise_on.add("usage")
    good.objects[key(1)] = b"abc"
    usages = await usage_all([good, bad])
    assert usages[0].used_bytes == 3 and usages[1] is None


def _services(adapters: list[FakeL2Adapter], events: RecordingEventSink) -> HttpServices:
    loop = asyncio.get_running_loop()

    def run_storage(coro: Coroutine[Any, Any, Any]) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coro, loop)

    return HttpServices(
        settings=HttpSettings("id", 256, "blake3", "LRU", "auto", False, ()),
        engine=None,  # type: ignore[arg-type]
        quotas=None,  # type: ignore[arg-type]
        supervisor=None,  # type: ignore[arg-type]
        eviction=None,  # type: ignore[arg-type]
        hasher=None,  # type: ignore[arg-type]
        l2_adapters=adapters,
        l2_types=["mock"] * len(adapters),
        run_storage=run_storage,
        engine_problem=lambda: None,
        events=events,
    )


async def test_delete_from_l2_publishes_only_the_removed_keys_with_the_adapter_index() -> None:
    first, second = FakeL2Adapter("first"), ProbedFake()
    a, b, c = key(1), key(2), key(3)
    second.objects.update({a: b"x", b: b"y"})
    await second.lookup_and_lock([b])  # pinned: skipped, not reported
    events = RecordingEventSink()
    services = _services([first, second], events)
    report = await delete_from_l2(services, 1, [a, b, c])
    assert (report.deleted, report.missing, report.locked) == (1, 1, 1)
    assert events.of_type(L2Deleted) == [L2Deleted(1, (a,))]
    assert (await delete_from_l2(services, 0, [a])).deleted == 0
    assert len(events.events) == 1  # nothing deleted: nothing published
