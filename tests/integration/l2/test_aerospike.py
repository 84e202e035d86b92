"""aerospike at the client boundary: no Aerospike server is reachable from this machine.

Objects larger than a record are split and reassembled (the first record, written last, makes them
visible), over the fake client module; the real client's refusal to connect fails start-up naming the
hosts.
"""

from __future__ import annotations

import pytest

from lmcache.app.config import ConfigError
from tests.fakes import aerospike_client
from tests.integration.l2.conftest import build
from tests.integration.l2.servers import free_port
from tests.integration.l2.test_contract import empty, key, payload


async def test_large_objects_span_records_and_appear_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    aerospike_client.install(monkeypatch)
    spec = {"type": "aerospike", "hosts": "127.0.0.1:3000", "set": "kv", "target_segment_bytes": 50_000}
    adapter = build(spec)
    data = payload(1, 180_000)
    order: list[str] = []
    real_put = aerospike_client.FakeClient.put
    monkeypatch.setattr(
        aerospike_client.FakeClient, "put", lambda self, k, *a: order.append(k[2]) or real_put(self, k, *a)
    )
    assert await adapter.store([key(1)], [data]) == [True]
    assert len(order) == 4 and order[-1].endswith("#0")  # 180 KB + header in 4 records, the first last
    assert {k[1] for k in aerospike_client.RECORDS} == {"kv"}
    out = empty(data.nbytes)
    assert await adapter.load([key(1)], [out]) == [True] and bytes(out) == bytes(data)
    assert (await adapter.list_keys()).keys == (key(1),)
    assert await adapter.delete([key(1)]) == [True] and aerospike_client.RECORDS == {}
    await adapter.close()


def test_an_unreachable_cluster_fails_start_up_naming_the_hosts() -> None:
    pytest.importorskip("aerospike", reason="the aerospike client is not installed (lmcache[aerospike])")
    hosts = f"127.0.0.1:{free_port()}"
    with pytest.raises(
        ConfigError, match=rf"--l2-adapter #1 \(type 'aerospike'\): aerospike: cannot connect to {hosts}"
    ):
        build({"type": "aerospike", "hosts": hosts, "read_timeout_ms": 200, "write_timeout_ms": 200})
