"""resp and s3 specifics against the real loopback servers.

Multipart uploads, env fallbacks, prefixes; resp loads read off the socket by hand (mixed replies in one
pipeline, AUTH, a deadline that cuts a load short).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING

from lmcache.adapters.storage.object_format import key_name
from tests.integration.l2.conftest import build, resp_spec, s3_spec
from tests.integration.l2.servers import RedisServer
from tests.integration.l2.test_contract import empty, key, payload

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from tests.integration.l2.servers import RedisClusterServers, S3Server


async def test_s3_multipart_upload_round_trip(s3_server: S3Server) -> None:
    adapter = build(s3_spec(s3_server, f"mp-{uuid.uuid4().hex[:6]}"))
    adapter.multipart_threshold = 6 << 20
    data = payload(1, 20 << 20)  # 3 parts of 8 MiB
    assert await adapter.store([key(1)], [data]) == [True]
    out = empty(data.nbytes)
    assert await adapter.load([key(1)], [out]) == [True] and bytes(out) == bytes(data)
    s3 = await adapter._s3()
    uploads = await s3.list_multipart_uploads(Bucket=adapter.bucket, Prefix=adapter.prefix)
    assert not uploads.get("Uploads")
    await adapter.close()


async def test_s3_cancelled_multipart_upload_is_aborted_and_invisible(s3_server: S3Server) -> None:
    adapter = build(s3_spec(s3_server, f"mpc-{uuid.uuid4().hex[:6]}"))
    adapter.multipart_threshold = 6 << 20
    task = asyncio.create_task(adapter.store([key(2)], [payload(2, 20 << 20)]))
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await asyncio.sleep(0.05)
    assert await adapter.lookup_and_lock([key(2)]) == [False]
    assert (await adapter.list_keys()).keys == ()
    s3 = await adapter._s3()
    uploads = await s3.list_multipart_uploads(Bucket=adapter.bucket, Prefix=adapter.prefix)
    assert not uploads.get("Uploads")
    await adapter.close()


async def test_s3_prefixes_keep_adapters_apart(s3_server: S3Server) -> None:
    a = build(s3_spec(s3_server, f"a-{uuid.uuid4().hex[:6]}"))
    b = build(s3_spec(s3_server, f"b-{uuid.uuid4().hex[:6]}"))
    await a.store([key(3)], [payload(3, 100)])
    assert await b.lookup_and_lock([key(3)]) == [False]
    assert (await b.usage()).objects == 0 and (await a.usage()).objects == 1
    await a.close()
    await b.close()


async def test_resp_env_fallbacks_reach_the_server(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LMCACHE_RESP_HOST", "127.0.0.1")
    monkeypatch.setenv("LMCACHE_RESP_PORT", str(redis_server.port))
    adapter = build({"type": "resp"})
    assert await adapter.store([key(4)], [payload(4, 100)]) == [True]
    name = "lmcache:org%2Fmodel-7b@@1000100@0@" + key(4).chunk_hash.hex()
    assert redis_server.client().exists(name) == 1
    await adapter.close()


async def test_resp_listing_pages_through_many_keys(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    adapter = build(resp_spec(redis_server))
    keys = [key(i) for i in range(300)]
    assert all(await adapter.store(keys, [payload(i, 32) for i in range(300)]))
    seen, cursor = [], None
    while True:
        page = await adapter.list_keys(cursor, limit=7)
        assert len(page.keys) <= 7
        seen += page.keys
        cursor = page.next_cursor
        if cursor is None:
            break
    assert set(seen) == set(keys)
    await adapter.close()


async def test_resp_persist_disabled_deletes_this_runs_objects(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    adapter = build({**resp_spec(redis_server), "persist_enabled": False})
    await adapter.store([key(1), key(2)], [payload(1, 10), payload(2, 10)])
    await adapter.close()
    assert redis_server.client().keys("lmcache:*") == []


async def test_resp_one_pipeline_of_hits_misses_and_bad_values(redis_server: RedisServer) -> None:
    """Every reply of a batch is read to its end, whatever it holds, and the connection is reused."""
    adapter = build(resp_spec(redis_server))
    sizes = {1: 3_000_000, 3: 5000, 5: 70_000, 6: 10}
    keys = {i: key(i) for i in range(1, 8)}
    stored = {i: payload(i, n) for i, n in sizes.items()}
    assert all(await adapter.store([keys[i] for i in stored], list(stored.values())))
    raw = redis_server.client()
    raw.set("lmcache:" + key_name(keys[2]), b"not an object at all")  # garbage where a header should be
    raw.set("lmcache:" + key_name(keys[4]), raw.get("lmcache:" + key_name(keys[3])))  # another key's object
    raw.lpush("lmcache:" + key_name(keys[7]), b"x")  # a list: GET answers with an error reply
    order = [1, 2, 3, 4, 5, 6, 7, 8]
    wanted = {1: 3_000_000, 2: 20, 3: 5000, 4: 5000, 5: 70_000, 6: 10, 7: 10, 8: 10}
    outs = [empty(wanted[i]) for i in order]
    got = await adapter.load([keys.get(i, key(i)) for i in order], outs)
    assert got == [True, False, True, False, True, True, False, False]
    for i, out in zip(order, outs, strict=True):
        if i in stored:
            assert bytes(out) == bytes(stored[i])
    assert adapter.counters.corrupt == 3
    again = empty(5000)
    assert await adapter.load([keys[3]], [again]) == [True] and bytes(again) == bytes(stored[3])
    assert adapter.counters.backend_errors == 0
    await adapter.close()


async def test_resp_password_reaches_both_clients(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis-auth", password="s3cret").start()
    try:
        spec = {**resp_spec(server), "password": "s3cret"}
        adapter = build(spec)
        data = payload(9, 200_000)
        assert await adapter.store([key(9)], [data]) == [True]
        out = empty(data.nbytes)
        assert await adapter.load([key(9)], [out]) == [True] and bytes(out) == bytes(data)
        await adapter.close()
        wrong = build({**spec, "password": "nope"})
        assert await wrong.load([key(9)], [empty(data.nbytes)]) == [False]
        assert wrong.counters.backend_errors == 1
        await wrong.close()
    finally:
        server.stop()


async def test_resp_a_cancelled_load_returns_at_once_from_a_stalled_server(tmp_path: Path) -> None:
    """A load blocked on a frozen server ends when its deadline cancels it, not at the socket timeout."""
    import os
    import signal
    import time

    server = RedisServer(tmp_path / "redis-stall").start()
    adapter = build(resp_spec(server))
    try:
        data = payload(3, 100_000)
        assert await adapter.store([key(3)], [data]) == [True]
        assert await adapter.load([key(3)], [empty(data.nbytes)]) == [True]  # a connection to reuse
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(adapter.load([key(3)], [empty(data.nbytes)]), 0.5)
            assert time.monotonic() - started < 3.0  # the socket timeout is 10 s
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        out = empty(data.nbytes)
        assert await adapter.load([key(3)], [out]) == [True] and bytes(out) == bytes(data)
    finally:
        await adapter.close()
        server.stop()


async def test_resp_cluster_spreads_keys_over_every_primary(redis_cluster: RedisClusterServers) -> None:
    redis_cluster.flushall()
    adapter = build({"type": "resp", "host": "127.0.0.1", "port": redis_cluster.port, "num_workers": 2})
    keys = [key(i, salt=f"s{i % 3}") for i in range(60)]
    data = [payload(i, 3000 + i) for i in range(60)]
    assert await adapter.store(keys, data) == [True] * 60
    assert adapter.router is not None
    assert all(node.client().dbsize() > 5 for node in redis_cluster.nodes)
    out = [empty(d.nbytes) for d in data]
    assert await adapter.load(keys, out) == [True] * 60
    assert [bytes(o) for o in out] == [bytes(d) for d in data]
    assert await adapter.lookup_and_lock(keys) == [True] * 60
    usage = await adapter.usage()
    assert usage.objects == 60 and set(usage.by_salt) == {"s0", "s1", "s2"}
    assert await adapter.delete(keys[:30]) == [True] * 30
    assert sum(node.client().dbsize() for node in redis_cluster.nodes) == 30
    assert adapter.counters.backend_errors == 0
    await adapter.close()


async def test_standalone_mode_forced_on_a_cluster_node_fails_stores_loudly(
    redis_cluster: RedisClusterServers,
) -> None:
    redis_cluster.flushall()
    spec = {"type": "resp", "host": "127.0.0.1", "port": redis_cluster.port, "cluster": False}
    adapter = build(spec)
    keys = [key(i) for i in range(30)]
    stored = await adapter.store(keys, [payload(i, 100) for i in range(30)])
    assert not all(stored)  # most keys live on other nodes: MOVED, counted as backend errors
    assert adapter.counters.backend_errors >= 1
    await adapter.close()
