"""nixl_store specifics: backends that cannot run here fail at start-up naming what is missing; the pool."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from lmcache.app.config import ConfigError
from tests.integration.l2.conftest import build
from tests.integration.l2.test_contract import empty, key, payload

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize(
    ("backend", "missing"), [("GDS", "libcufile"), ("GDS_MT", "libcufile"), ("OBJ", "libcuobj")]
)
def test_a_backend_without_its_library_fails_naming_both(tmp_path: Path, backend: str, missing: str) -> None:
    spec = {
        "type": "nixl_store",
        "backend": backend,
        "backend_params": {"file_path": str(tmp_path), "use_direct_io": "true"},
        "pool_size": 8,
    }
    with pytest.raises(ConfigError, match=rf"nixl backend '{backend}' cannot start: {missing}\S* is missing"):
        build(spec)


async def test_pool_size_bounds_the_objects_and_posix_round_trips(tmp_path: Path) -> None:
    params = {"file_path": str(tmp_path / "pool"), "use_direct_io": "false"}
    adapter = build({"type": "nixl_store", "backend": "POSIX", "backend_params": params, "pool_size": 2})
    data = [payload(i, 9000) for i in range(3)]
    assert await adapter.store([key(0), key(1)], data[:2]) == [True, True]
    assert await adapter.store([key(2)], data[2:]) == [False]
    assert adapter.counters.capacity_rejections == 1
    out = empty(9000)
    assert await adapter.load([key(1)], [out]) == [True] and bytes(out) == bytes(data[1])
    await adapter.close()
