"""L2 eviction and serde in a running server: an engine keeps storing, the tier stays small, KV comes back."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import torch

from lmcache.domain.units import gb_to_bytes
from tests.integration.server.conftest import Engine, hit_chunks, key, run_server, tokens_for

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.server.conftest import RunningServer

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks of 256 KiB
CAPACITY_GB = 0.002  # 2 MiB: about 8 objects


def _status(server: RunningServer) -> dict[str, Any]:
    return httpx.get(f"{server.http_url}/status", timeout=10).json()  # type: ignore[no-any-return]


def _settle(server: RunningServer, stored: int) -> dict[str, Any]:
    """Wait until the store controller has handed every queued object to L2."""
    deadline = time.monotonic() + 30
    while True:
        status = _status(server)
        store = status["storage_manager"]["store_controller"]
        if store["pending"] == 0 and store["stored"] >= stored:
            return status
        assert time.monotonic() < deadline, store
        time.sleep(0.05)


def _fill(engine: Engine, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    index = torch.tensor(BLOCKS)
    for layer in engine.layers:
        layer.tensor[:, index] = torch.randn(layer.tensor[:, index].shape, generator=gen).half()


def _disk_bytes(base: Path) -> int:
    return sum(p.stat().st_size for p in base.rglob("*.kv") if ".quarantine" not in p.parts)


@pytest.mark.slow
def test_an_fs_tier_with_eviction_stays_under_capacity_and_serves_the_newest(tmp_path: Path) -> None:
    base = tmp_path / "l2"
    spec = {
        "type": "fs",
        "base_path": str(base),
        "max_capacity_gb": CAPACITY_GB,
        "eviction": {"eviction_policy": "LRU", "trigger_watermark": 0.8, "eviction_ratio": 0.25},
    }
    with run_server("--l2-adapter", json.dumps(spec)) as server, server.client() as c:
        engine = Engine(c)
        engine.register()
        prompts = 10
        for seq in range(prompts):
            _fill(engine, seq)
            tokens = tokens_for(100 + seq)
            assert c.store(key(tokens, f"put{seq}", end=512), 1000, [BLOCKS], b"")[1]
            c.end_session(f"put{seq}")
            status = _settle(server, 2 * (seq + 1))
            assert _disk_bytes(base) <= gb_to_bytes(CAPACITY_GB)
        newest = engine.blocks(BLOCKS)
        eviction = status["storage_manager"]["l2_adapters"][0]["eviction"]
        assert eviction["eviction_policy"] == "LRU"
        assert eviction["evicted_objects"] >= 2 * prompts - 8
        assert eviction["rejected_objects"] == 0
        assert eviction["used_bytes"] <= eviction["capacity_bytes"] == gb_to_bytes(CAPACITY_GB)
        metrics = httpx.get(f"{server.http_url}/metrics", timeout=10).text
        assert 'lmcache_mp_l2_evicted_objects_total{adapter="0",type="fs"}' in metrics
        c.clear(False)  # L1 gone: only L2 can answer now
        engine.zero(BLOCKS)
        newest_tokens = tokens_for(100 + prompts - 1)
        assert hit_chunks(c, newest_tokens, "get") == 2
        assert c.retrieve(key(newest_tokens, "get", end=512), 1000, [BLOCKS], b"", 0)[1] is True
        assert all(torch.equal(a, b) for a, b in zip(newest, engine.blocks(BLOCKS), strict=True))
        c.end_session("get")
        assert hit_chunks(c, tokens_for(100), "old") == 0  # the oldest prompt was evicted
        c.end_session("old")
        c.unregister_kv_cache(1000)
        engine.close()


@pytest.mark.slow
def test_fp8_then_aesgcm_through_a_server_uses_the_registered_dtype(tmp_path: Path) -> None:
    key_path = tmp_path / "master.key"
    key_path.write_bytes(os.urandom(32))
    key_path.chmod(0o600)
    base = tmp_path / "l2"
    spec = {
        "type": "fs",
        "base_path": str(base),
        "serde": [{"type": "fp8"}, {"type": "aesgcm", "master_key_path": str(key_path), "aes_bits": 256}],
    }
    with run_server("--l2-adapter", json.dumps(spec)) as server, server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(7)
        original = engine.blocks(BLOCKS)
        assert c.store(key(tokens, "put", end=512), 1000, [BLOCKS], b"")[1]
        c.end_session("put")
        status = _settle(server, 2)
        serde = status["storage_manager"]["l2_adapters"][0]["serde"]
        assert serde["stages"] == ["fp8", "aesgcm"]
        assert serde.get("encode_failures", 0) == 0  # fp8 found the engine's fp16 layout
        assert 0 < _disk_bytes(base) < 2 * 256 * 1024 * 0.53
        c.clear(False)
        engine.zero(BLOCKS)
        assert hit_chunks(c, tokens, "get") == 2
        assert c.retrieve(key(tokens, "get", end=512), 1000, [BLOCKS], b"", 0)[1] is True
        for before, after in zip(original, engine.blocks(BLOCKS), strict=True):
            error = (after.float() - before.float()).abs()
            assert bool((error <= 0.0635 * before.float().abs() + 1e-3).all())
            assert error.max() > 0  # it went through fp8
        c.end_session("get")
        c.unregister_kv_cache(1000)
        engine.close()
