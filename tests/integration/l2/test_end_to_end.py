"""End to end: a real server with an fs L2; store through the ZMQ client, clear L1, retrieve from L2."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest
import torch

from tests.integration.server.conftest import Engine, hit_chunks, key, run_server, tokens_for

if TYPE_CHECKING:
    from pathlib import Path

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks


def _object_files(base: Path) -> list[Path]:
    return [p for p in base.rglob("*.kv") if p.is_file()]


def _wait_for_files(base: Path, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(_object_files(base)) < n:
        assert time.monotonic() < deadline, f"L2 holds {len(_object_files(base))} objects, expected {n}"
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["default", "skip_l1"])
def test_fs_l2_serves_after_l1_is_cleared(tmp_path: Path, policy: str) -> None:
    base = tmp_path / "l2"
    spec = json.dumps({"type": "fs", "base_path": str(base)})
    with run_server("--l2-adapter", spec, "--l2-store-policy", policy) as server, server.client() as c:
        engine = Engine(c)
        engine.register()
        tokens = tokens_for(11)
        original = engine.blocks(BLOCKS)
        assert c.store(key(tokens, "put", end=512), 1000, [BLOCKS], b"")[1]
        c.end_session("put")
        _wait_for_files(base, 2)
        if policy == "default":
            c.clear(False)  # drop L1; with skip_l1 the store already did
        engine.zero(BLOCKS)
        assert hit_chunks(c, tokens, "get") == 2
        ok = c.retrieve(key(tokens, "get", end=512), 1000, [BLOCKS], b"", 0)
        assert ok[1] is True
        assert all(torch.equal(a, b) for a, b in zip(original, engine.blocks(BLOCKS), strict=True))
        # The hit came from L2: with L1 cleared and the files gone there is nothing left to find.
        c.end_session("get")
        c.clear(False)
        for path in _object_files(base):
            path.unlink()
        assert hit_chunks(c, tokens, "gone") == 0
        c.unregister_kv_cache(1000)
        engine.close()
