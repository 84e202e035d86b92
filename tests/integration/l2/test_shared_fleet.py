"""The shared fleet cache: two real `lmcache server` processes and a coordinator on one shared L2.

For Redis Cluster, Mooncake (objects in a storage node, no server contributes memory) and a shared fs
directory: a prompt stored through server A is a hit through server B, whose L1 never saw it, and
retrieves byte-exact; the coordinator lists both servers, counts the objects once (B's loads report
no stores), and a quota evicts through a live server from the one shared tier, after which B misses.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import torch

from tests.integration.coordinator.conftest import coordinator, decode, wait_until
from tests.integration.coordinator.test_fleet_e2e import spawn, wait_ready
from tests.integration.server.conftest import CHUNK_BYTES, Engine, hit_chunks, key, tokens_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from tests.integration.coordinator.conftest import CoordinatorProcess
    from tests.integration.server.conftest import RunningServer

__all__ = ("coordinator", "spawn")  # fixtures used here

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 2 L2 objects
SALT = "tenant-shared"


def _spec(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if kind == "resp_cluster":
        cluster = request.getfixturevalue("redis_cluster")
        cluster.flushall()
        return {"type": "resp", "host": "127.0.0.1", "port": cluster.port, "shared": True}
    if kind == "mooncake_store":
        spec = request.getfixturevalue("mooncake").spec(f"fleet-{uuid.uuid4().hex[:8]}:")
        return {**spec, "shared": True}
    return {"type": "fs", "base_path": str(tmp_path / "shared-l2"), "shared": True}


def _directory(coord: CoordinatorProcess) -> dict[Any, dict[str, Any]]:
    return {decode(row["key"]): row for row in coord.get("/directory/keys?limit=10000")["keys"]}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resp_cluster", "mooncake_store", "fs"])
def test_a_chunk_stored_through_one_server_is_a_hit_through_another(
    kind: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    coordinator: Callable[..., CoordinatorProcess],
    spawn: Callable[..., RunningServer],
) -> None:
    spec = json.dumps(_spec(kind, request, tmp_path))
    coord = coordinator(eviction_check_interval=0.3, eviction_ratio=0.5, trigger_watermark=0.8)

    def flags(instance_id: str) -> tuple[str, ...]:
        return (
            "--instance-id",
            instance_id,
            "--l2-adapter",
            spec,
            "--coordinator-url",
            coord.url,
            "--coordinator-advertise-ip",
            "127.0.0.1",
            "--coordinator-heartbeat-interval",
            "0.2",
            "--coordinator-l2-event-reporting",
            "--coordinator-l2-event-flush-interval",
            "0.1",
        )

    a, b = spawn(*flags("server-a")), spawn(*flags("server-b"))
    wait_ready(a)
    wait_ready(b)
    members = lambda: {i["instance_id"] for i in coord.get("/instances")["instances"]}  # noqa: E731
    wait_until(lambda: members() == {"server-a", "server-b"}, timeout=15)
    tokens = tokens_for(4242)

    with a.client() as client_a, b.client() as client_b:
        writer, reader = Engine(client_a, seed=1), Engine(client_b, seed=2)
        writer.register()
        reader.register()
        original = writer.blocks(BLOCKS)
        assert client_a.store(key(tokens, "put", end=512, salt=SALT), 1000, [BLOCKS])[1]
        client_a.end_session("put")
        stored = wait_until(lambda: len(d := _directory(coord)) == 2 and d, timeout=15)
        assert {row["instance_id"] for row in stored.values()} == {"server-a"}

        # B's L1 never saw the prompt: the hit and the bytes come from the shared tier.
        assert not any(torch.equal(x, y) for x, y in zip(original, reader.blocks(BLOCKS), strict=True))
        assert hit_chunks(client_b, tokens, "get", salt=SALT) == 2
        assert client_b.retrieve(key(tokens, "get", end=512, salt=SALT), 1000, [BLOCKS], b"", 0)[1]
        client_b.end_session("get")
        assert all(torch.equal(x, y) for x, y in zip(original, reader.blocks(BLOCKS), strict=True))

        # The coordinator counts each object once, whichever server read it.
        time.sleep(0.5)  # B's event flushes (every 0.1 s) would have landed
        assert _directory(coord).keys() == stored.keys()
        status = coord.get(f"/l2/status/{SALT}")
        assert status["usage_gb"] == pytest.approx(2 * CHUNK_BYTES / 2**30)

        # A quota under the usage evicts from the one shared tier through a live server; B then misses.
        limit = status["usage_gb"] * 0.6
        reply = httpx.put(f"{coord.url}/l2/quota/{SALT}", json={"limit_gb": limit}, timeout=5)
        assert reply.status_code == 200, reply.text
        wait_until(lambda: len(_directory(coord)) < 2, timeout=15)
        evicted = stored.keys() - _directory(coord).keys()
        assert evicted

        def gone_for_b() -> bool:
            # Each probe starts from an empty L1 (forced: a probe's own prefetch stays read-locked), so a
            # hit can only come from the shared tier.
            client_b.clear(True)
            return hit_chunks(client_b, tokens, f"again-{time.monotonic_ns()}", salt=SALT) < 2

        # Mooncake: once the delete wins over B's read leases (by force after FORCE_REMOVE_AFTER_S).
        wait_until(gone_for_b, timeout=30, interval=0.3)
        for engine, client in ((writer, client_a), (reader, client_b)):
            client.unregister_kv_cache(1000)
            engine.close()
    assert a.stop() == 0, a.log()
    assert b.stop() == 0, b.log()
