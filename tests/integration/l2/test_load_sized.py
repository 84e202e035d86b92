"""`load_sized`, the load a serde needs (stored sizes vary), over every backend that has it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.adapters.storage.serde_adapter import can_load_sized
from tests.integration.l2.test_contract import empty, key, payload

if TYPE_CHECKING:
    from tests.integration.l2.conftest import Harness


async def test_payload_lands_at_the_start_of_a_larger_buffer(backend: Harness) -> None:
    adapter = backend.make()
    if backend.name == "plugin":  # a user's class keeps its own format: serde refuses it at start-up
        assert not can_load_sized(adapter)
        return
    assert can_load_sized(adapter)
    data = [payload(1, 1), payload(2, 70_000), payload(3, 0)]
    keys = [key(1), key(2), key(3)]
    assert await adapter.store(keys, data) == [True, True, True]
    out = [empty(80_000) for _ in keys]
    assert await adapter.load_sized([*keys, key(9)], [*out, empty(10)]) == [1, 70_000, 0, None]
    assert [bytes(o[: d.nbytes]) for o, d in zip(out, data, strict=True)] == [bytes(d) for d in data]
    assert bytes(out[0][1:]) == bytes(79_999)  # nothing written past the payload


async def test_a_payload_larger_than_the_buffer_is_a_miss(backend: Harness) -> None:
    adapter = backend.make()
    if not can_load_sized(adapter):
        return
    assert await adapter.store([key(1)], [payload(1, 1000)]) == [True]
    assert await adapter.load_sized([key(1)], [empty(999)]) == [None]
    assert await adapter.load_sized([key(1)], [empty(1000)]) == [1000]


async def test_damage_is_a_miss_and_counted(verifying: Harness) -> None:
    adapter = verifying.make()
    assert await adapter.store([key(1)], [payload(1, 5000)]) == [True]
    await verifying.tamper(adapter, key(1), "flip")
    assert await adapter.load_sized([key(1)], [empty(6000)]) == [None]
    assert adapter.counters.corrupt >= 1
