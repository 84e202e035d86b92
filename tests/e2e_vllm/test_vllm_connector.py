"""A real vLLM (CPU build) with our `LMCacheMPConnector` against a real `lmcache server`, end to end.

One random-weight model is made locally; vLLM serves it once without a connector (the reference outputs)
and once per connector configuration: `auto`, the bare `"kv_connector":"LMCacheMPConnector"` of the local
quick start (vLLM's registry must resolve it to our class) with LMCACHE_MP_TRANSFER_MODE=auto, which on CPU
means worker-side copies (`lmcache_driven`); and `engine_driven`, the quick start's CPU-only JSON (explicit
module path, `lmcache.mp.mp_transfer_mode`; the KV cache migrated to POSIX SHM, the server copies). vLLM's own
prefix caching is off, so every hit it reports came through the connector. Greedy outputs must equal the
reference ones in every state of the server: cold, warm, partly warm, after `POST /cache/clear`, after L1
was overwritten by other prompts, while it is down and after a restart. The model's outputs change when any
early prompt token changes (checked below), so a wrong KV block shows.

vLLM comes from `scripts/vllm-venv` (built on first use; `scripts/test` builds it first). Set
LMCACHE_SKIP_VLLM_E2E=1 to skip this module on a machine that cannot install vLLM; CI never sets it.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.e2e_vllm.harness import (
    VLLM_USES_OURS,
    Completion,
    LMCacheServer,
    VllmServer,
    kv_transfer_config,
    make_model,
    metric_sum,
    vllm_python,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

if os.environ.get("LMCACHE_SKIP_VLLM_E2E") == "1":
    pytest.skip("LMCACHE_SKIP_VLLM_E2E=1: vLLM end-to-end test opted out", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

VOCAB = 512
CHUNK = 256  # the server's default --chunk-size
PROMPT_LEN = 1000  # 3 full chunks (768 tokens) are stored; the 232-token tail is always computed
FULL_HIT = PROMPT_LEN // CHUNK * CHUNK
SHARED = 600  # the "partial" prompt shares this many leading tokens: 2 full chunks hit
FILLERS = 6  # prompts of 3 chunks each: 18 chunks, more than the small L1 below holds
L1_GB = 4 / 1024  # 4 MiB = 16 chunks of this model (1 KiB of KV per token), so the fillers evict
MAX_TOKENS = 16
STORED = r"Stored (\d+) tokens"
RETRIEVED = r"Retrieved (\d+) tokens"
REGISTERED = r"Registered KV cache for GPU ID \d+ with 2 layers"
UNHEALTHY = "marking it unhealthy"  # a heartbeat (worker's or scheduler's) lost the server
RECOVERED = "LMCache server answers again"  # ... and found it again
EXTERNAL_HITS = "vllm:external_prefix_cache_hits_total"
STORE_TOKENS = "lmcache_mp_store_tokens_total"
RETRIEVE_TOKENS = "lmcache_mp_retrieve_tokens_total"
EVICTIONS = "lmcache_mp_l1_evictions_total"
HEARTBEAT_S = 1.0


def _ids(seed: int, n: int = PROMPT_LEN) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(3, VOCAB) for _ in range(n)]  # 0-2 are <unk>, <s>, </s>


def _build_prompts() -> dict[str, list[int]]:
    main = _ids(1)
    early_change = [(main[0] - 3 + 1) % (VOCAB - 3) + 3, *main[1:]]  # only the first token differs
    prompts = {"main": main, "main_again": list(main), "early_change": early_change}
    prompts["partial"] = main[:SHARED] + _ids(2)[SHARED:]
    for i in range(FILLERS):
        prompts[f"filler{i}"] = _ids(100 + i)
    for i, name in enumerate(("cleared", "down", "restarted", "reregistered")):
        prompts[name] = _ids(200 + i)
    return prompts


PROMPTS = _build_prompts()


def _sum_logged(server: LMCacheServer, pattern: str) -> int:
    assert server.proc is not None
    return sum(int(n) for n in re.findall(pattern, server.proc.log()))


def _wait_logged(server: LMCacheServer, pattern: str, at_least: int, timeout: float = 30.0) -> int:
    """Wait until the tokens the server logged for `pattern` add up to `at_least`; the sum."""
    deadline = time.monotonic() + timeout
    while (total := _sum_logged(server, pattern)) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return total


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vllm_py() -> Path:
    return vllm_python()  # raises with scripts/vllm-venv's output when the venv cannot be built


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e_vllm")


@pytest.fixture(scope="module")
def model(vllm_py: Path, workdir: Path) -> Path:
    return make_model(vllm_py, workdir / "model", hidden=128, layers=2, heads=2, vocab=VOCAB)


@pytest.fixture(scope="module")
def reference(vllm_py: Path, model: Path, workdir: Path) -> dict[str, list[int]]:
    """Greedy outputs of every prompt from a vLLM without any KV connector."""
    vllm = VllmServer.start(vllm_py, model, workdir / "vllm-reference.log")
    try:
        return {name: vllm.complete(ids, MAX_TOKENS).token_ids for name, ids in PROMPTS.items()}
    finally:
        vllm.stop()


@pytest.fixture(scope="module", params=["auto", "engine_driven"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def lmcache(mode: str, workdir: Path) -> Iterator[LMCacheServer]:
    server = LMCacheServer(workdir / f"lmcache-{mode}", l1_size_gb=L1_GB)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _connector_config(mode: str, server: LMCacheServer) -> tuple[dict[str, Any], dict[str, str]]:
    """The `--kv-transfer-config` and extra environment of one configuration."""
    # Short heartbeat so a restarted server is re-registered within seconds; short timeout so requests sent
    # while the server is down fall back to recomputing quickly.
    config = kv_transfer_config(server, heartbeat_interval=HEARTBEAT_S, mq_timeout=10)
    if mode == "engine_driven":
        # The quick start's CPU-only JSON: explicit module path and the zero-copy SHM transfer mode.
        config["kv_connector_module_path"] = "lmcache.integration.vllm.lmcache_mp_connector"
        config["kv_connector_extra_config"]["lmcache.mp.mp_transfer_mode"] = "engine_driven"
        return config, {}
    # The bare registry name (vLLM must resolve it to our class); the mode comes from the environment.
    return config, {"LMCACHE_MP_TRANSFER_MODE": mode}


@pytest.fixture(scope="module")
def vllm(
    mode: str,
    lmcache: LMCacheServer,
    vllm_py: Path,
    model: Path,
    workdir: Path,
    reference: dict[str, list[int]],
) -> Iterator[VllmServer]:
    kv_transfer, env = _connector_config(mode, lmcache)
    server = VllmServer.start(vllm_py, model, workdir / f"vllm-{mode}.log", kv_transfer=kv_transfer, env=env)
    try:
        yield server
    finally:
        server.stop()


def _check(vllm: VllmServer, reference: dict[str, list[int]], name: str) -> Completion:
    out = vllm.complete(PROMPTS[name], MAX_TOKENS)
    assert out.token_ids == reference[name], f"{name!r}: output differs from the run without the connector"
    return out


def _wait_recovered(vllm: VllmServer, timeout: float = 30.0) -> None:
    """Wait until every heartbeat that lost the server found it again (scheduler's and worker's)."""
    deadline = time.monotonic() + timeout
    while vllm.proc.count(RECOVERED) < vllm.proc.count(UNHEALTHY) and time.monotonic() < deadline:
        time.sleep(0.1)
    lost, back = vllm.proc.count(UNHEALTHY), vllm.proc.count(RECOVERED)
    assert back >= lost > 0, f"heartbeats lost the server {lost} times and found it again {back} times"


def _check_stored(
    vllm: VllmServer, lmcache: LMCacheServer, reference: dict[str, list[int]], name: str
) -> Completion:
    """`_check` an uncached prompt and wait until the server logged its full chunks stored."""
    before = _sum_logged(lmcache, STORED)
    out = _check(vllm, reference, name)
    stored = _wait_logged(lmcache, STORED, before + FULL_HIT) - before
    assert stored == FULL_HIT, f"{name!r}: the server logged {stored} stored tokens, wanted {FULL_HIT}"
    return out


# ------------------------------------------------------------------------------------------------- tests


def test_model_output_depends_on_the_first_token(reference: dict[str, list[int]]) -> None:
    # Without this, identical outputs would not prove the retrieved KV was right.
    assert reference["early_change"] != reference["main"]
    assert reference["main_again"] == reference["main"]


@pytest.mark.parametrize(
    "module_path",
    [None, "lmcache.integration.vllm.lmcache_mp_connector", "lmcache.adapters.vllm.connector"],
)
def test_every_way_of_naming_the_connector_resolves_to_ours(vllm_py: Path, module_path: str | None) -> None:
    # vLLM's own factory, as `vllm serve` uses it: the registry name alone, the quick start's module path,
    # and the path of our adapter package must all give our class (not vLLM's builtin one).
    code = (
        "import sys\n"
        "from vllm.config import KVTransferConfig\n"
        "from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory\n"
        "path = sys.argv[1] or None\n"
        "cfg = KVTransferConfig(kv_connector='LMCacheMPConnector', kv_role='kv_both',\n"
        "                       kv_connector_module_path=path)\n"
        "cls = KVConnectorFactory.get_connector_class(cfg)\n"
        "print('RESOLVED', cls.__module__, cls.__qualname__)\n"
    )
    env = {**os.environ, "VLLM_NO_USAGE_STATS": "1", "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1"}
    done = subprocess.run(
        [str(vllm_py), "-c", code, module_path or ""], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "RESOLVED lmcache.adapters.vllm.connector LMCacheMPConnector" in done.stdout, done.stdout


def test_vllm_loads_our_connector_and_registers(mode: str, vllm: VllmServer, lmcache: LMCacheServer) -> None:
    assert lmcache.proc is not None
    lmcache.proc.wait_for_log(REGISTERED, timeout=30)
    log = vllm.proc.log()
    assert "Creating v1 connector with name: LMCacheMPConnector" in log
    if mode == "auto":  # the quick start: "auto" sends CPU tensors down the lmcache_driven path
        assert VLLM_USES_OURS in log, "vLLM fell back to its builtin LMCacheMPConnector"
        assert "Creating transfer context (device_type=cpu, mode=lmcache_driven)" in log
    else:  # the vLLM-side lines the quick start's CPU-only section shows
        assert "lmcache.mp.mp_transfer_mode = engine_driven" in log
        assert "Creating transfer context (device_type=cpu, mode=engine_driven)" in log
        assert re.search(r"Migrated CPU KV cache tensor \(nbytes=\d+\) to SHM /lmcache_kv_\d+_0", log)


def test_first_request_stores(
    vllm: VllmServer, lmcache: LMCacheServer, reference: dict[str, list[int]]
) -> None:
    before = lmcache.metrics()
    assert _check_stored(vllm, lmcache, reference, "main").cached_tokens == 0
    stored = metric_sum(lmcache.metrics(), STORE_TOKENS) - metric_sum(before, STORE_TOKENS)
    assert stored == FULL_HIT


def test_identical_request_retrieves(
    vllm: VllmServer, lmcache: LMCacheServer, reference: dict[str, list[int]]
) -> None:
    hits_before, before, before_log = vllm.metrics(), lmcache.metrics(), _sum_logged(lmcache, RETRIEVED)
    out = _check(vllm, reference, "main_again")
    assert out.cached_tokens == FULL_HIT, "vLLM did not report the connector's hit tokens for the request"
    assert metric_sum(vllm.metrics(), EXTERNAL_HITS) - metric_sum(hits_before, EXTERNAL_HITS) == FULL_HIT
    assert _wait_logged(lmcache, RETRIEVED, before_log + FULL_HIT) - before_log == FULL_HIT
    retrieved = metric_sum(lmcache.metrics(), RETRIEVE_TOKENS) - metric_sum(before, RETRIEVE_TOKENS)
    assert retrieved == FULL_HIT


def test_shared_prefix_hits_its_full_chunks(vllm: VllmServer, reference: dict[str, list[int]]) -> None:
    out = _check(vllm, reference, "partial")
    assert out.cached_tokens == SHARED // CHUNK * CHUNK


def test_cleared_l1_recomputes_then_stores_again(
    vllm: VllmServer, lmcache: LMCacheServer, reference: dict[str, list[int]]
) -> None:
    assert _check_stored(vllm, lmcache, reference, "cleared").cached_tokens == 0
    cleared = lmcache.clear_l1()
    assert cleared.get("status") == "ok"
    out = _check_stored(vllm, lmcache, reference, "cleared")
    assert out.cached_tokens == 0, "hit after the L1 was cleared"
    assert _check(vllm, reference, "cleared").cached_tokens == FULL_HIT


def test_overwritten_l1_never_serves_wrong_kv(
    vllm: VllmServer, lmcache: LMCacheServer, reference: dict[str, list[int]]
) -> None:
    before = _sum_logged(lmcache, STORED)
    if _check(vllm, reference, "main").cached_tokens == 0:  # the clear above removed it: stored again now
        _wait_logged(lmcache, STORED, before + FULL_HIT)
    assert _check(vllm, reference, "main").cached_tokens == FULL_HIT
    evictions_before = metric_sum(lmcache.metrics(), EVICTIONS)
    for i in range(FILLERS):
        _check_stored(vllm, lmcache, reference, f"filler{i}")
    assert metric_sum(lmcache.metrics(), EVICTIONS) > evictions_before, "the fillers evicted nothing"
    # The main prompt's chunks were the least recently used ones: gone, so recomputed, never wrong KV.
    out = _check_stored(vllm, lmcache, reference, "main")
    assert out.cached_tokens == 0, "the main prompt's chunks survived 18 newer chunks in a 16-chunk L1"
    assert _check(vllm, reference, "main").cached_tokens == FULL_HIT


def test_server_down_and_restarted(
    vllm: VllmServer, lmcache: LMCacheServer, reference: dict[str, list[int]]
) -> None:
    assert lmcache.stop() == 0
    started = time.monotonic()
    assert _check(vllm, reference, "down").cached_tokens == 0
    assert time.monotonic() - started < 60, "a request waited on the dead server for too long"

    proc = lmcache.start()  # same ports, empty L1, no registered KV caches
    assert _check(vllm, reference, "restarted").cached_tokens == 0
    proc.wait_for_log(REGISTERED, timeout=HEARTBEAT_S * 10 + 20)  # the heartbeat re-registers the worker
    _wait_recovered(vllm)  # the scheduler's heartbeat recovers on its own probe: lookups miss until then
    assert _check_stored(vllm, lmcache, reference, "reregistered").cached_tokens == 0
    assert _check(vllm, reference, "reregistered").cached_tokens == FULL_HIT
