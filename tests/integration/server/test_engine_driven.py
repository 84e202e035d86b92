"""Engine-driven transfers (ops 14-19): over the SHM pool, and with bytes in the message (raw and pickled)."""

from __future__ import annotations

import mmap
import os
import pickle
import re
from pathlib import Path

import torch

from lmcache.adapters.transfer.chunk_codec import encode_raw
from lmcache.adapters.transport.wire_types import RegisterEngineDrivenContextPayload
from tests.integration.server.conftest import hit_chunks, key, run_server, tokens_for

LAYERS, SLOTS, HIDDEN = 2, 256, 128
CHUNK_SHAPE = (2, LAYERS, SLOTS, HIDDEN)
CHUNK_BYTES = 2 * LAYERS * SLOTS * HIDDEN * 2


def _payload(instance_id: int = 2000) -> RegisterEngineDrivenContextPayload:
    return RegisterEngineDrivenContextPayload(
        instance_id, "m", 1, 16, LAYERS, HIDDEN, "float16", False, SLOTS
    )


def _chunks(seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(CHUNK_SHAPE, generator=gen).half() for _ in range(2)]


def test_shm_pool_round_trip() -> None:
    with run_server("--supported-transfer-mode", "engine_driven", "--shm-name", "edtest") as server:
        pool_path = Path("/dev/shm/lmcache_l1_pool_edtest")
        with server.client() as c:
            reply = c.register_engine_driven(_payload())
            assert reply.shm_name == "lmcache_l1_pool_edtest" and reply.pool_size > 0
            fd = os.open(f"/dev/shm/{reply.shm_name}", os.O_RDWR)
            pool = mmap.mmap(fd, reply.pool_size)
            os.close(fd)
            arena = torch.frombuffer(pool, dtype=torch.uint8)
            tokens, chunks = tokens_for(11), _chunks(1)
            prep = c.prepare_store(key(tokens, "s", end=512), 2000)
            assert prep.context["chunk_indices"] == [0, 1]
            for slot, index in zip(prep.context["slots"], prep.context["chunk_indices"], strict=True):
                assert slot["length"] == CHUNK_BYTES and slot["shape"] == list(CHUNK_SHAPE)
                assert slot["dtype"] == "float16"
                arena[slot["offset"] : slot["offset"] + CHUNK_BYTES].view(torch.float16).view(
                    CHUNK_SHAPE
                ).copy_(chunks[index])
            assert c.commit_store(key(tokens, "s", end=512), 2000) is True
            assert c.commit_store(key(tokens, "s", end=512), 2000) is False  # nothing pending any more
            again = c.prepare_store(key(tokens, "s2", end=512), 2000)
            assert again.context == {"slots": [], "chunk_indices": []}  # everything cached
            assert hit_chunks(c, tokens, "r") == 2
            got = c.prepare_retrieve(key(tokens, "r", end=512), 2000)
            assert got.success
            for slot, chunk in zip(got.context["slots"], chunks, strict=True):
                view = (
                    arena[slot["offset"] : slot["offset"] + CHUNK_BYTES].view(torch.float16).view(CHUNK_SHAPE)
                )
                assert torch.equal(view, chunk)
            assert c.commit_retrieve(key(tokens, "r", end=512), 2000) is True
            server.wait_for_log(r"Stored 512 tokens in \d+\.\d+ seconds")
            server.wait_for_log(r"Retrieved 512 tokens in \d+\.\d+ seconds")
            # without a lookup the objects are not locked: prepare_retrieve fails
            assert not c.prepare_retrieve(key(tokens, "nolookup", end=512), 2000).success
            # lmcache-driven ops are disabled in this mode: failure values, not silence
            assert c.store(key(tokens, "x", end=512), 2000, [[1]], b"") == (b"", False)
            c.unregister_engine_driven(2000)
            assert c.commit_retrieve(key(tokens, "r", end=512), 2000) is False
            del arena
            pool.close()
        assert pool_path.exists()
    assert not pool_path.exists()  # the server unlinks the pool it created


def test_bytes_path_raw_and_pickled() -> None:
    with run_server("--supported-transfer-mode", "auto", "--shm-name", "") as server, server.client() as c:
        reply = c.register_engine_driven(_payload(2001))
        assert (reply.shm_name, reply.pool_size) == ("", 0)
        tokens, chunks = tokens_for(12), _chunks(2)
        assert c.prepare_store(key(tokens, "s", end=512), 2001).context == {}
        raw = encode_raw([t.view(torch.uint8).numpy().tobytes() for t in chunks])
        assert c.commit_store(key(tokens, "s", end=512), 2001, raw) is True
        assert hit_chunks(c, tokens, "r") == 2
        got = c.prepare_retrieve(key(tokens, "r", end=512), 2001)
        assert got.success and got.context == {}
        restored = pickle.loads(got.data)  # what a 0.5.6 worker does with it
        assert all(torch.equal(a, b) for a, b in zip(restored, chunks, strict=True))
        assert c.commit_retrieve(key(tokens, "r", end=512), 2001) is True
        # the pickled form LMCache 0.5.6 workers send is accepted without running arbitrary pickle
        other = tokens_for(13)
        assert c.commit_store(key(other, "p", end=512), 2001, pickle.dumps(chunks, protocol=4)) is True
        assert hit_chunks(c, other, "p2") == 2

        class Evil:
            def __reduce__(self) -> tuple[object, tuple[str]]:
                return (os.system, ("touch /tmp/lmcache-pwned",))

        assert c.commit_store(key(tokens_for(14), "e", end=512), 2001, pickle.dumps([Evil()])) is False
        assert not Path("/tmp/lmcache-pwned").exists()
        assert c.commit_store(key(tokens_for(15), "w", end=512), 2001, encode_raw([b"x" * 10])) is False


def test_refused_registration_is_loud() -> None:
    with run_server("--supported-transfer-mode", "engine_driven") as server, server.client() as c:
        from tests.integration.server.conftest import Engine

        engine = Engine(c, 4242)
        engine.register()  # answered (None), but refused
        assert c.store(key(tokens_for(16), "s", end=512), 4242, [list(range(32))], b"") == (b"", False)
        engine.close()
    server.wait_for_log(
        re.escape("Registration of instance 4242 failed: lmcache-driven transfers are disabled")
    )
