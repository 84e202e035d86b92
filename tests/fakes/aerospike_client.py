"""A fake `aerospike` client module: the calls the aerospike adapter makes, over a shared dict.

Install it with `install(monkeypatch)`; `RECORDS` is the cluster (shared by every client, so objects
outlive an adapter), `CONNECTS` counts connections. Semantics follow the real client (7.x+): `exists`
answers meta None for a missing record, `get` raises RecordNotFound, bins come back as given.
"""

from __future__ import annotations

import copy
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pytest

RECORDS: dict[tuple[str, str, str], dict[str, Any]] = {}
CONNECTS: list[dict[str, Any]] = []


class AerospikeError(Exception):
    """Base of the client's errors."""


class RecordNotFound(AerospikeError):
    """No such record."""


class ClientError(AerospikeError):
    """The client refuses (e.g. not connected)."""


class _Query:
    def __init__(self, namespace: str, set_name: str) -> None:
        self.where = (namespace, set_name)
        self.bins: tuple[str, ...] = ()

    def select(self, *bins: str) -> None:
        self.bins = bins

    def results(self) -> list[tuple[Any, Any, dict[str, Any]]]:
        out = []
        for key, bins in list(RECORDS.items()):
            if key[:2] == self.where:
                out.append((key, {"ttl": 0}, {b: bins[b] for b in self.bins if b in bins}))
        return out


class FakeClient:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.connected = False

    def connect(self, username: str | None = None, password: str | None = None) -> FakeClient:
        CONNECTS.append({"hosts": self.config["hosts"], "user": username})
        self.connected = True
        return self

    def _check(self, key: Any) -> tuple[str, str, str]:
        if not self.connected:
            raise ClientError("not connected")
        return (str(key[0]), str(key[1]), str(key[2]))

    def put(self, key: Any, bins: dict[str, Any], meta: Any = None, policy: Any = None) -> None:
        RECORDS[self._check(key)] = copy.deepcopy(bins)

    def get(self, key: Any, policy: Any = None) -> tuple[Any, Any, dict[str, Any]]:
        record = RECORDS.get(self._check(key))
        if record is None:
            raise RecordNotFound(str(key))
        return key, {"gen": 1}, copy.deepcopy(record)

    def exists(self, key: Any, policy: Any = None) -> tuple[Any, Any]:
        return key, ({"gen": 1} if self._check(key) in RECORDS else None)

    def remove(self, key: Any, policy: Any = None) -> None:
        if RECORDS.pop(self._check(key), None) is None:
            raise RecordNotFound(str(key))

    def query(self, namespace: str, set_name: str) -> _Query:
        return _Query(namespace, set_name)

    def close(self) -> None:
        self.connected = False


def install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import aerospike` (and `aerospike.exception`) return this fake; starts an empty cluster."""
    RECORDS.clear()
    CONNECTS.clear()
    exception = types.ModuleType("aerospike.exception")
    for cls in (AerospikeError, RecordNotFound, ClientError):
        setattr(exception, cls.__name__, cls)
    module = types.ModuleType("aerospike")
    module.client = FakeClient  # type: ignore[attr-defined]
    module.exception = exception  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "aerospike", module)
    monkeypatch.setitem(sys.modules, "aerospike.exception", exception)
