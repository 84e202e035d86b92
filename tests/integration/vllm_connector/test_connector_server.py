"""The connector's scheduler and worker halves against a real `lmcache server`, in both transfer modes.

Two fake vLLM instances with different KV contents: the first computes and stores a prompt, the second
looks it up and loads it into other blocks, which must then hold the first one's bytes exactly.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest
import torch

from lmcache.adapters.transport.client import LMCacheClient
from lmcache.adapters.vllm.transfer_base import RegistrationRejectedError
from tests.integration.server.conftest import free_port, run_server
from tests.integration.vllm_connector.conftest import CHUNK, FakeRequest, FakeVLLM, step_output

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from tests.integration.server.conftest import RunningServer

MODES = ["engine_driven", "lmcache_driven"]
PROMPT = [7, *range(1000, 1599)]  # 600 tokens: two full chunks and a tail


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


def _tokens(tag: int, n: int = len(PROMPT)) -> list[int]:
    return [tag, *range(5000, 5000 + n - 1)]


def _equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x.view(torch.int16), y.view(torch.int16)) for x, y in zip(a, b, strict=True))


def _cold_store(engine: FakeVLLM, tokens: list[int], request_id: str, blocks: list[int]) -> None:
    """A miss: vLLM computes the whole prompt and the full chunks get stored."""
    request = FakeRequest(request_id, tokens)
    plan = engine.schedule(request, blocks)
    assert plan.loads == []
    full = len(tokens) // CHUNK * CHUNK
    assert [(r.op.start, r.op.end) for r in plan.stores] == [(0, full)]
    assert engine.run(plan, blocks) == set()
    engine.scheduler.request_finished(request)


@pytest.mark.parametrize("mode", MODES)
def test_stored_blocks_come_back_byte_exact(server: RunningServer, mode: str) -> None:
    tokens = _tokens(1 + MODES.index(mode))
    a, b = FakeVLLM(server.url, mode, seed=1), FakeVLLM(server.url, mode, seed=2)
    try:
        blocks_a = list(range(1, 20))
        _cold_store(a, tokens, f"cold-{mode}", blocks_a)
        request = FakeRequest(f"warm-{mode}", tokens)
        assert b.matched(request) == 512
        blocks_b = list(range(30, 49))
        plan = b.schedule(request, blocks_b)
        assert [(r.op.start, r.op.end, r.op.block_ids) for r in plan.loads] == [(0, 512, blocks_b[:16])]
        assert plan.stores == []  # the hit chunks are cached already; the tail is not a full chunk
        assert not _equal(b.blocks(blocks_b[:16]), a.blocks(blocks_a[:16]))
        assert b.run(plan, blocks_b[16:]) == set()
        assert _equal(b.blocks(blocks_b[:16]), a.blocks(blocks_a[:16]))
        b.scheduler.request_finished(request)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mode", MODES)
def test_blocks_vllm_already_has_are_not_overwritten(server: RunningServer, mode: str) -> None:
    tokens = _tokens(11 + MODES.index(mode))
    a, b = FakeVLLM(server.url, mode, seed=3), FakeVLLM(server.url, mode, seed=4)
    try:
        blocks_a = list(range(1, 20))
        _cold_store(a, tokens, f"cold-skip-{mode}", blocks_a)
        blocks_b = list(range(30, 49))
        mine = b.blocks(blocks_b[8:10])
        request = FakeRequest(f"warm-skip-{mode}", tokens)
        plan = b.schedule(request, blocks_b, local_tokens=320)  # vLLM's prefix cache holds 10 blocks
        (load,) = plan.loads
        assert (load.op.start, load.op.end, load.op.skip_first_n_tokens) == (256, 512, 64)
        assert b.run(plan, blocks_b[16:]) == set()
        assert _equal(b.blocks(blocks_b[8:10]), mine)
        assert _equal(b.blocks(blocks_b[10:16]), a.blocks(blocks_a[10:16]))
        b.scheduler.request_finished(request)
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("mode", MODES)
def test_load_from_a_cleared_server_reports_the_blocks(server: RunningServer, mode: str) -> None:
    tokens = _tokens(21 + MODES.index(mode))
    a, b = FakeVLLM(server.url, mode, seed=5), FakeVLLM(server.url, mode, seed=6)
    admin = LMCacheClient(server.url)
    try:
        _cold_store(a, tokens, f"cold-err-{mode}", list(range(1, 20)))
        request = FakeRequest(f"warm-err-{mode}", tokens)
        assert b.matched(request) == 512
        admin.clear(True)  # forced: drops the objects the lookup locked
        blocks_b = list(range(30, 49))
        b.scheduler.update_state_after_alloc(request, (blocks_b,), 512)
        plan = b.scheduler.build_plan(step_output(request.request_id, blocks_b, 512, 88))
        errors = b.run(plan, blocks_b[16:])
        assert errors == set(blocks_b[:16])
        # vLLM recomputes those blocks; the scheduler half stores their chunks again afterwards.
        b.scheduler.on_load_errors(errors)
        again = b.scheduler.build_plan(step_output(request.request_id, blocks_b, 600, 0))
        assert [(r.op.start, r.op.end) for r in again.stores] == [(0, 512)]
        assert b.run(again, []) == set()
        check = FakeRequest(f"check-err-{mode}", tokens)
        assert a.matched(check) == 512
        a.scheduler.request_finished(check)
    finally:
        admin.close()
        a.close()
        b.close()


def test_a_full_prompt_hit_leaves_the_last_token_to_vllm(server: RunningServer) -> None:
    tokens = _tokens(31, 512)
    a, b = FakeVLLM(server.url, "engine_driven", seed=7), FakeVLLM(server.url, "engine_driven", seed=8)
    try:
        _cold_store(a, tokens, "cold-full", list(range(1, 17)))
        request = FakeRequest("warm-full", tokens)
        assert b.matched(request) == 511
        b.scheduler.update_state_after_alloc(request, (list(range(30, 46)),), 511)
        plan = b.scheduler.build_plan(step_output(request.request_id, list(range(30, 46)), 511, 1))
        assert [(r.op.start, r.op.end) for r in plan.loads] == [(0, 512)]
        assert b.run(plan, []) == set()
        assert _equal(b.blocks(list(range(30, 46))), a.blocks(list(range(1, 17))))
    finally:
        a.close()
        b.close()


def test_a_consumer_loads_but_never_stores(server: RunningServer) -> None:
    tokens = _tokens(41)
    consumer = FakeVLLM(server.url, "lmcache_driven", seed=9, role="kv_consumer")
    try:
        request = FakeRequest("consumer", tokens)
        plan = consumer.schedule(request, list(range(1, 20)))
        assert plan.stores == []
        assert consumer.run(plan, list(range(1, 20))) == set()
        check = FakeRequest("consumer-check", tokens)
        assert consumer.matched(check) == 0
    finally:
        consumer.close()


def _wait(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


def _settled(engine: FakeVLLM) -> bool:
    worker, scheduler = engine.worker.heartbeat, engine.scheduler.adapter.heartbeat
    return worker.healthy and not worker.recovering and scheduler.healthy


def test_workers_register_again_after_a_server_restart() -> None:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    # Two workers whose heartbeat never sees the outage (a store finds the server forgot them and they
    # register again on the spot) and one whose heartbeat does (it registers again when pings resume).
    setups = [("engine_driven", 60.0), ("lmcache_driven", 60.0), ("lmcache_driven", 0.2)]
    with run_server("--port", str(port)):
        engines = [FakeVLLM(url, mode, seed=10 + i, heartbeat_s=hb) for i, (mode, hb) in enumerate(setups)]
        for i, engine in enumerate(engines):
            _cold_store(engine, _tokens(51 + i), f"before-restart-{i}", list(range(1, 20)))
    with run_server("--port", str(port)):
        try:
            for i, engine in enumerate(engines):
                _wait(lambda e=engine: _settled(e))
                tokens = _tokens(61 + i)
                _cold_store(engine, tokens, f"after-restart-{i}", list(range(1, 20)))
                assert engine.matched(FakeRequest(f"check-restart-{i}", tokens)) == 512
        finally:
            for engine in engines:
                engine.close()


def test_worker_side_copies_without_a_pool_move_chunks_in_messages() -> None:
    with run_server("--shm-name", "") as bare:
        tokens = _tokens(81)
        a, b = FakeVLLM(bare.url, "lmcache_driven", seed=20), FakeVLLM(bare.url, "lmcache_driven", seed=21)
        try:
            blocks_a = list(range(1, 20))
            _cold_store(a, tokens, "cold-bare", blocks_a)
            request = FakeRequest("warm-bare", tokens)
            blocks_b = list(range(30, 49))
            plan = b.schedule(request, blocks_b, local_tokens=64)
            assert b.run(plan, blocks_b[16:]) == set()
            assert _equal(b.blocks(blocks_b[2:16]), a.blocks(blocks_a[2:16]))
        finally:
            a.close()
            b.close()


@pytest.mark.parametrize(
    # the connector's modes use the server's ops of the other name (config.server_ops): refused by a server
    # that only offers the ops of the connector mode's own name
    ("mode", "server_mode"),
    [("engine_driven", "engine_driven"), ("lmcache_driven", "lmcache_driven")],
)
def test_a_registration_the_server_cannot_serve_fails_at_start(mode: str, server_mode: str) -> None:
    with (
        run_server("--supported-transfer-mode", server_mode) as other,
        pytest.raises(RegistrationRejectedError),
    ):
        FakeVLLM(other.url, mode, seed=22)


def test_block_allocations_reach_the_server() -> None:
    with run_server("--log-level", "DEBUG") as debug_server:
        engine = FakeVLLM(debug_server.url, "lmcache_driven", seed=3)
        try:
            _cold_store(engine, _tokens(9), "alloc", list(range(1, 20)))
            assert debug_server.wait_for_log(r"Block allocation report from \d+ for tiny: 1 requests")
        finally:
            engine.close()
