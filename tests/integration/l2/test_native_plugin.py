"""native_plugin specifics: a compiled connector built by the test, refusals that name what is missing."""

from __future__ import annotations

import pytest

from lmcache.app.config import ConfigError
from tests.integration.l2.conftest import build
from tests.integration.l2.test_contract import empty, key, payload


class Half:
    """A connector without batch_get."""

    def batch_set(self, keys: list[str], values: list[bytes]) -> list[bool]:
        return [True] * len(keys)

    def batch_exists(self, keys: list[str]) -> list[bool]:
        return [False] * len(keys)


class Broken(Half):
    def batch_get(self, keys: list[str], buffers: list[bytearray]) -> list[int]:
        raise OSError("device gone")


def _spec(module: str, cls: str, **params: object) -> dict[str, object]:
    return {"type": "native_plugin", "module_path": module, "class_name": cls, "adapter_params": params}


def test_missing_module_class_or_method_fails_start_up_naming_it(native_connector: str) -> None:
    with pytest.raises(ConfigError, match=r"cannot import module 'no_such_connector'"):
        build(_spec("no_such_connector", "Store"))
    with pytest.raises(ConfigError, match=r"has no class 'Nope'"):
        build(_spec(native_connector, "Nope"))
    with pytest.raises(ConfigError, match=r"lacks the connector methods batch_get"):
        build(_spec(__name__, "Half"))
    with pytest.raises(ConfigError, match=r"adapter_params do not fit"):
        build(_spec(native_connector, "Store", bogus=1))


async def test_the_compiled_connector_is_used_and_a_raising_one_is_a_counted_miss(
    native_connector: str,
) -> None:
    adapter = build(_spec(native_connector, "Store", capacity=2))
    assert type(adapter.connector).__module__ == "kvstore"
    data = payload(1, 70_000)
    assert await adapter.store([key(1), key(2), key(3)], [data, data, data]) == [True, True, False]
    out = empty(data.nbytes)
    assert await adapter.load([key(1)], [out]) == [True] and bytes(out) == bytes(data)
    await adapter.close()
    broken = build(_spec(__name__, "Broken"))
    assert await broken.load([key(1)], [empty(10)]) == [False]
    assert broken.counters.backend_errors == 1
    await broken.close()


class Liar(Half):
    """Says every value is 64 MiB, and records the size of each buffer it is handed."""

    def __init__(self) -> None:
        self.buffers: list[int] = []

    def batch_get(self, keys: list[str], buffers: list[bytearray]) -> list[int]:
        self.buffers += [len(b) for b in buffers]
        return [64 << 20] * len(keys)


async def test_a_size_far_larger_than_expected_is_a_miss_without_allocating_it() -> None:
    adapter = build(_spec(__name__, "Liar"))
    assert await adapter.load([key(1)], [empty(5000)]) == [False]
    assert adapter.connector.buffers and max(adapter.connector.buffers) < 1 << 20  # only the staging buffer
    assert adapter.counters.backend_errors == adapter.counters.quarantined == 0
    assert adapter.counters.load_misses == 1
    await adapter.close()
