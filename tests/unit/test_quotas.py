from __future__ import annotations

import pytest

from lmcache.domain.keys import InvalidKeyError
from lmcache.domain.quotas import QuotaStatus, QuotaTable
from lmcache.domain.units import GIB, bytes_to_gb, gb_to_bytes

from ._storage import ALIGN, key, make_l1, put


def test_set_get_delete_list() -> None:
    table = QuotaTable()
    table.set("t1", 100)
    table.set("t1", 200)
    table.set("_default", 5)
    assert table.get("t1") == 200
    assert table.get("") == 5 == table.get("_default")
    assert table.list() == {"t1": 200, "": 5}
    assert table.delete("t1") is True
    assert table.delete("t1") is False
    assert table.get("t1") is None


def test_rejects_negative_limits_and_bad_salts() -> None:
    table = QuotaTable()
    with pytest.raises(ValueError, match=">= 0"):
        table.set("t", -1)
    with pytest.raises(InvalidKeyError):
        table.set("a/b", 1)


def test_status_joins_limits_and_l1_usage() -> None:
    table = QuotaTable()
    table.set("a", 10 * ALIGN)
    l1, _, _ = make_l1()
    put(l1, key(1, "a"), key(2, "b"))
    assert table.status(l1.usage_by_salt()) == {
        "a": QuotaStatus(10 * ALIGN, ALIGN),
        "b": QuotaStatus(None, ALIGN),
    }


def test_gb_units_are_binary() -> None:
    assert gb_to_bytes(1) == GIB == 1073741824
    assert gb_to_bytes(0.5) == GIB // 2
    assert bytes_to_gb(GIB * 3) == 3.0
    with pytest.raises(ValueError):
        gb_to_bytes(-1)
