"""resp and s3 specifics against the real loopback servers: multipart uploads, env fallbacks, prefixes."""

from __future__ import annotations

import asyncio
import uuid
from typing import TYPE_CHECKING

from tests.integration.l2.conftest import build, resp_spec, s3_spec
from tests.integration.l2.test_contract import empty, key, payload

if TYPE_CHECKING:
    import pytest

    from tests.integration.l2.servers import RedisServer, S3Server


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
