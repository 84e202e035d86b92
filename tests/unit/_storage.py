"""Builders shared by the storage-engine unit tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dependency_injector import providers

from lmcache.app.storage_container import l1_eviction_policy
from lmcache.domain.arena import ArenaAllocator
from lmcache.domain.keys import ObjectKey
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.quotas import QuotaTable
from tests.fakes.clock import FakeClock
from tests.fakes.events import RecordingEventSink

if TYPE_CHECKING:
    from lmcache.domain.eviction import EvictionPolicy, EvictionPolicyName

ALIGN = 64


def key(i: int, salt: str = "", rank: int = 0x01000100, group: int = 0, model: str = "m") -> ObjectKey:
    return ObjectKey(i.to_bytes(32, "big"), model, rank, group, salt)


def named_policy(name: EvictionPolicyName, quotas: QuotaTable) -> EvictionPolicy:
    """The L1 policy `--eviction-policy name` selects (the server container's Selector)."""
    return l1_eviction_policy(providers.Object(name), providers.Object(quotas))()


def make_l1(
    slots: int = 16,
    policy: EvictionPolicyName = "LRU",
    quotas: QuotaTable | None = None,
    write_ttl: float = 600.0,
    read_ttl: float = 300.0,
) -> tuple[L1Manager, FakeClock, RecordingEventSink]:
    """An L1 of `slots` objects of ALIGN bytes each."""
    clock = FakeClock()
    events = RecordingEventSink()
    l1 = L1Manager(
        ArenaAllocator(slots * ALIGN, ALIGN),
        named_policy(policy, quotas or QuotaTable()),
        clock,
        events,
        write_ttl_s=write_ttl,
        read_ttl_s=read_ttl,
    )
    return l1, clock, events


def put(l1: L1Manager, *keys: ObjectKey, size: int = ALIGN) -> None:
    """Reserve and commit objects, asserting they fit."""
    extents = l1.reserve(list(keys), size)
    assert all(e is not None for e in extents)
    assert all(l1.finish(list(keys)))
