"""The scheduler half against a recording stand-in of its server adapter: roles, lookups, locks, sessions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from lmcache.adapters.vllm.config import KVRole
from lmcache.adapters.vllm.scheduler_planner import SchedulerPlanner

CHUNK, BLOCK = 256, 32


class RecordingAdapter:
    """Answers lookups from `hits` (None = still running) and records every call."""

    chunk_size = CHUNK

    def __init__(self) -> None:
        self.hits: dict[str, int | None] = {}
        self.calls: list[tuple[Any, ...]] = []

    def maybe_submit_lookup_request(self, request_id: str, token_ids: Any, cache_salt: str = "") -> None:
        if not any(c[0] == "lookup" and c[1] == request_id for c in self.calls):
            self.calls.append(("lookup", request_id, len(token_ids), cache_salt))

    def check_lookup_result(self, request_id: str) -> int | None:
        return self.hits.get(request_id, 0)

    def cleanup_lookup_result(self, request_id: str) -> None:
        self.calls = [c for c in self.calls if not (c[0] == "lookup" and c[1] == request_id)]
        self.calls.append(("cleanup", request_id))

    def free_lookup_locks(
        self, token_ids: Any, start: int, end: int, request_id: str, cache_salt: str = ""
    ) -> None:
        self.calls.append(("free", request_id, start, end))

    def finish_request(self, request_id: str, token_ids: Any, locked_end: int, cache_salt: str = "") -> None:
        self.calls.append(("finish", request_id, locked_end))

    def report_block_allocations(self, records: Any) -> None:
        self.calls.append(("alloc", [(r.req_id, r.new_block_ids, r.new_token_ids) for r in records]))

    def named(self, name: str) -> list[tuple[Any, ...]]:
        return [c for c in self.calls if c[0] == name]


def _request(rid: str, n: int = 600, salt: str | None = None) -> Any:
    return SimpleNamespace(request_id=rid, all_token_ids=list(range(n)), num_prompt_tokens=n, cache_salt=salt)


def _output(rid: str, blocks: list[int], computed: int, scheduled: int) -> Any:
    new = SimpleNamespace(req_id=rid, block_ids=(blocks,), num_computed_tokens=computed)
    cached = SimpleNamespace(req_ids=[], new_block_ids=[], resumed_req_ids=set(), num_computed_tokens=[])
    return SimpleNamespace(
        scheduled_new_reqs=[new], scheduled_cached_reqs=cached, num_scheduled_tokens={rid: scheduled}
    )


def _half(role: str = "kv_both") -> tuple[SchedulerPlanner, RecordingAdapter]:
    adapter = RecordingAdapter()
    return SchedulerPlanner(adapter, KVRole.parse(role), BLOCK, save_decode_cache=False), adapter  # type: ignore[arg-type]


def test_a_running_lookup_asks_vllm_to_come_back() -> None:
    half, adapter = _half()
    adapter.hits["r"] = None
    assert half.get_num_new_matched_tokens(_request("r"), 0) == (None, False)
    assert half.get_num_new_matched_tokens(_request("r"), 0) == (None, False)
    assert len(adapter.named("lookup")) == 1
    adapter.hits["r"] = 512
    assert half.get_num_new_matched_tokens(_request("r"), 0) == (512, False)


def test_a_hit_is_loaded_and_not_stored_again() -> None:
    half, adapter = _half()
    adapter.hits["r"] = 512
    request = _request("r")
    assert half.get_num_new_matched_tokens(request, 0) == (512, False)
    blocks = list(range(19))
    half.update_state_after_alloc(request, (blocks,), 512)
    plan = half.build_plan(_output("r", blocks, 512, 88))
    assert [(r.op.start, r.op.end) for r in plan.loads] == [(0, 512)]
    assert plan.stores == []
    assert adapter.named("free") == []  # the retrieve releases the locks
    half.request_finished(request)
    assert adapter.named("finish") == [("finish", "r", 0)]


def test_a_consumer_looks_up_but_never_stores() -> None:
    half, adapter = _half("kv_consumer")
    request = _request("r")
    assert half.get_num_new_matched_tokens(request, 0) == (0, False)
    half.update_state_after_alloc(request, (list(range(19)),), 0)
    plan = half.build_plan(_output("r", list(range(19)), 0, 600))
    assert len(adapter.named("cleanup")) == 1
    assert plan.stores == []


def test_a_producer_stores_but_never_looks_up() -> None:
    half, adapter = _half("kv_producer")
    adapter.hits["r"] = 512
    request = _request("r")
    assert half.get_num_new_matched_tokens(request, 0) == (0, False)
    half.update_state_after_alloc(request, (list(range(19)),), 0)
    plan = half.build_plan(_output("r", list(range(19)), 0, 600))
    assert adapter.named("lookup") == [] and adapter.named("cleanup") == []
    assert [(r.op.start, r.op.end) for r in plan.stores] == [(0, 512)]
    assert plan.loads == []


def test_hits_vllm_already_holds_are_unlocked_at_once() -> None:
    half, adapter = _half()
    adapter.hits["r"] = 512
    request = _request("r", 800)
    assert half.get_num_new_matched_tokens(request, 512) == (0, False)
    half.update_state_after_alloc(request, (list(range(25)),), 0)
    assert adapter.named("free") == [("free", "r", 0, 512)]
    half.request_finished(request)
    assert adapter.named("finish") == [("finish", "r", 0)]


def test_an_aborted_request_releases_its_locks_when_it_finishes() -> None:
    half, adapter = _half()
    adapter.hits["r"] = 512
    request = _request("r")
    half.get_num_new_matched_tokens(request, 0)
    half.request_finished(request)  # never got blocks
    assert adapter.named("finish") == [("finish", "r", 512)]
    assert "r" not in half.trackers


def test_a_preempted_request_starts_a_new_lookup_cycle() -> None:
    half, adapter = _half()
    adapter.hits["r"] = 256
    request = _request("r")
    assert half.get_num_new_matched_tokens(request, 0) == (256, False)
    half.update_state_after_alloc(request, (list(range(19)),), 256)
    half.build_plan(_output("r", list(range(19)), 256, 344))
    adapter.hits["r"] = 512  # it stored meanwhile; vLLM preempted it and asks again
    assert half.get_num_new_matched_tokens(request, 0) == (512, False)
    assert adapter.named("finish") == [("finish", "r", 0)]
    assert len(adapter.named("cleanup")) == 2


def test_requests_whose_tokens_do_not_identify_their_kv_are_never_cached() -> None:
    half, adapter = _half()
    for request in (
        _request("salted", salt="a/b"),
        SimpleNamespace(**vars(_request("embeds")), prompt_embeds=object()),
        SimpleNamespace(**vars(_request("lora")), lora_request=object()),
    ):
        assert half.get_num_new_matched_tokens(request, 0) == (0, False)
        half.update_state_after_alloc(request, (list(range(19)),), 0)
        plan = half.build_plan(_output(request.request_id, list(range(19)), 0, 600))
        assert plan.stores == [] and plan.loads == []
        half.request_finished(request)
    assert adapter.calls == []


def test_short_prompts_and_full_local_hits_skip_the_lookup() -> None:
    half, adapter = _half()
    assert half.get_num_new_matched_tokens(_request("short", 200), 0) == (0, False)
    assert half.get_num_new_matched_tokens(_request("local", 600), 512) == (0, False)
    assert adapter.named("lookup") == []


def test_new_blocks_are_reported_with_the_tokens_they_hold() -> None:
    half, adapter = _half()
    request = _request("r", n=70)
    half.get_num_new_matched_tokens(request, 0)
    half.update_state_after_alloc(request, ([5, 6],), 0)
    half.build_plan(_output("r", [5, 6], 0, 64))
    assert adapter.named("alloc") == [("alloc", [("r", [5, 6], list(range(64)))])]
    request.all_token_ids.extend([900, 901])  # decoding ran past the prompt: one more block
    cached = SimpleNamespace(
        req_ids=["r", "r2"], new_block_ids=[([7],), None], resumed_req_ids=set(), num_computed_tokens=[64, 0]
    )
    step = SimpleNamespace(scheduled_new_reqs=[], scheduled_cached_reqs=cached, num_scheduled_tokens={"r": 8})
    half.build_plan(step)
    assert adapter.named("alloc")[1] == ("alloc", [("r", [7], [*range(64, 70), 900, 901])])
    quiet = SimpleNamespace(
        req_ids=["r"], new_block_ids=[None], resumed_req_ids=set(), num_computed_tokens=[72]
    )
    half.build_plan(
        SimpleNamespace(scheduled_new_reqs=[], scheduled_cached_reqs=quiet, num_scheduled_tokens={})
    )
    assert len(adapter.named("alloc")) == 2  # a step without new blocks reports nothing
