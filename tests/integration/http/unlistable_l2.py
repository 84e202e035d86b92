"""A `plugin` L2 adapter that cannot list its keys, loaded by a real server (`"type": "plugin"`).

None of the built-in adapters (fs, mock, s3, resp, fault_inject) lacks a listing; a user's plugin may,
and says so with `can_list_keys = False` (adapters/http/l2_ops.py finds it through the `inner` chain).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.fakes.l2_adapter import FakeL2Adapter

if TYPE_CHECKING:
    from lmcache.ports.l2_adapter import KeyPage


class UnlistableL2Adapter(FakeL2Adapter):
    """Stores, loads and deletes like the fake; listing is not supported."""

    can_list_keys = False

    async def list_keys(self, cursor: str | None = None, limit: int = 1000) -> KeyPage:
        raise NotImplementedError("this backend cannot enumerate its keys")
