"""aerospike and hfbucket at the client boundary: no Aerospike server nor the Hub is reachable here.

Objects larger than a record are split and reassembled (the first record, written last, makes them
visible), over the fake client module; the real client's refusal to connect fails start-up naming the
hosts.
"""

from __future__ import annotations

import sys

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


@pytest.mark.parametrize(
    ("spec", "module", "extra"),
    [
        ({"type": "aerospike", "hosts": "127.0.0.1:3000"}, "aerospike", "aerospike"),
        ({"type": "hfbucket", "bucket": "org/kv"}, "huggingface_hub", "hfbucket"),
    ],
)
def test_a_missing_client_names_the_pip_extra(
    monkeypatch: pytest.MonkeyPatch, spec: dict[str, str], module: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import raises ModuleNotFoundError
    with pytest.raises(
        ConfigError, match=rf"needs the optional package '{module}'; install lmcache\[{extra}\]"
    ):
        build(spec)


async def test_hfbucket_batches_each_operation_and_keeps_to_its_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.fakes import hf_bucket

    hf_bucket.install(monkeypatch)
    spec = {
        "type": "hfbucket",
        "bucket": "org/kv",
        "prefix": "a/",
        "token": "hf_x",
        "endpoint": "http://hub.local",
    }
    adapter = build(spec)
    other = build({**spec, "prefix": "b/"})
    assert hf_bucket.CLIENTS[0] == {"endpoint": "http://hub.local", "token": "hf_x"}
    data = [payload(i, 5000) for i in range(3)]
    assert await adapter.store([key(i) for i in range(3)], data) == [True] * 3
    assert sorted(hf_bucket.BUCKETS["org/kv"]) == sorted(adapter._path(key(i)) for i in range(3))
    assert await other.lookup_and_lock([key(0)]) == [False]
    assert (await other.list_keys()).keys == ()
    out = [empty(5000) for _ in range(3)]
    assert await adapter.load([key(i) for i in range(3)], out) == [True] * 3
    assert [bytes(o) for o in out] == [bytes(d) for d in data]
    await adapter.close()
    await other.close()
