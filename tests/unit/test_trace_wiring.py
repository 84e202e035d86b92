"""--trace-level wiring: traced classes only when asked, the output path rules, the recorded config."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from lmcache.app import runtime_extras
from lmcache.app.config import ConfigError
from lmcache.app.container import ServerContainer
from lmcache.app.trace_config import recorded_config, replay_settings
from lmcache.app.trace_wiring import storage_config_json, trace_path
from lmcache.domain.eviction_loop import EvictionLoop
from lmcache.domain.l1_manager import L1Manager
from lmcache.domain.prefetch_controller import PrefetchController
from lmcache.domain.quotas import QuotaTable
from lmcache.domain.store_controller import StoreController
from lmcache.domain.trace_hooks import (
    TracedEvictionLoop,
    TracedL1Manager,
    TracedPrefetchController,
    TracedQuotaTable,
    TracedStoreController,
)
from tests.unit.config_helpers import server
from tests.unit.test_trace_format import FIXTURE_056

if TYPE_CHECKING:
    from pathlib import Path

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_without_tracing_the_plain_engine_is_built() -> None:
    container = ServerContainer(config=server())
    assert container.trace_recorder() is None and container.plugins() is None
    assert type(container.l1()) is L1Manager
    assert type(container.eviction_loop()) is EvictionLoop
    assert type(container.prefetch_controller()) is PrefetchController
    assert type(container.store_controller()) is StoreController
    assert type(container.quotas()) is QuotaTable
    container.l1_memory().close()


def test_tracing_swaps_in_the_traced_engine_with_the_same_dependencies(tmp_path: Path) -> None:
    out = tmp_path / "t.lct"
    container = ServerContainer(
        config=server(
            ["--trace-level", "storage", "--trace-output", str(out), "--eviction-policy", "IsolatedLRU"]
        )
    )
    l1 = container.l1()
    assert isinstance(l1, TracedL1Manager) and l1.arena is container.arena()
    assert l1.write_ttl_s == 600 and l1.read_ttl_s == 300
    loop, prefetch, store = (
        container.eviction_loop(),
        container.prefetch_controller(),
        container.store_controller(),
    )
    assert isinstance(loop, TracedEvictionLoop) and loop._l1 is l1
    assert isinstance(prefetch, TracedPrefetchController) and prefetch._l1 is l1
    assert isinstance(store, TracedStoreController) and store._l1 is l1
    quotas = container.quotas()
    assert isinstance(quotas, TracedQuotaTable) and container.eviction_policy()._quotas is quotas
    recorder = container.trace_recorder()
    assert recorder is not None and recorder.base == out and not out.exists()  # created by start_trace
    runtime_extras.start_trace(container.trace_recorder())
    l1.reserve([], 1)
    runtime_extras.close_trace(container.trace_recorder())
    assert out.exists()
    container.l1_memory().close()


def test_trace_output_rules(tmp_path: Path) -> None:
    assert trace_path(tmp_path, 42, NOW) == tmp_path / "lmcache-trace-42-20260304-050607.lct"
    default = trace_path(None, 42, NOW)
    assert default.name == "lmcache-trace-42-20260304-050607.lct" and default.parent.is_dir()
    assert trace_path(tmp_path / "x.lct", 42, NOW) == tmp_path / "x.lct"
    (tmp_path / "old.lct").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"--trace-output: .*old.lct already exists"):
        trace_path(tmp_path / "old.lct", 42, NOW)
    with pytest.raises(ConfigError, match=r"--trace-output: directory .* does not exist"):
        trace_path(tmp_path / "no" / "x.lct", 42, NOW)


def test_a_trace_file_that_appears_before_start_fails_start_up_naming_the_flag(tmp_path: Path) -> None:
    out = tmp_path / "t.lct"
    container = ServerContainer(config=server(["--trace-level", "storage", "--trace-output", str(out)]))
    container.trace_recorder()  # built (its path checked) before the server starts
    out.write_bytes(b"someone else's")  # created between the check and the start: never overwritten
    with pytest.raises(ConfigError, match=r"--trace-output: cannot create .*t.lct"):
        runtime_extras.start_trace(container.trace_recorder())
    assert out.read_bytes() == b"someone else's"


def test_the_header_config_is_storage_only_and_redacted() -> None:
    adapter = json.dumps({"type": "resp", "host": "127.0.0.1", "port": 6379, "password": "hunter2"})
    config = server(["--l2-adapter", adapter, "--chunk-size", "512"])
    doc = json.loads(storage_config_json(config))
    assert set(doc) == {"chunk_size", "l1", "l2"} and doc["chunk_size"] == 512
    assert doc["l2"]["l2_adapter"][0]["password"] == "***" and "hunter2" not in storage_config_json(config)
    recorded = recorded_config(storage_config_json(config))
    settings = replay_settings(recorded, {})
    assert settings.l1_bytes == 1 << 30 and settings.eviction_policy == "LRU" and settings.l2


def test_a_056_config_maps_onto_the_replay_engine() -> None:
    from lmcache.adapters.trace.reader import open_series

    (trace,) = open_series([FIXTURE_056])
    settings = replay_settings(recorded_config(trace.header.sm_config_json), {}, synthetic_steps=True)
    assert settings.l1_bytes == 107374182 and settings.align_bytes == 4096
    assert (settings.eviction_policy, settings.trigger_watermark, settings.eviction_ratio) == (
        "LRU",
        0.8,
        0.2,
    )
    assert not settings.l2 and settings.synthetic_steps
    trace.close()


def test_no_recorded_config_needs_the_flags() -> None:
    with pytest.raises(ConfigError) as err:
        replay_settings(recorded_config(""), {})
    assert {re.sub(r":.*", "", m) for m in err.value.messages} == {"--l1-size-gb", "--eviction-policy"}
    ok = replay_settings(recorded_config("not json"), {"l1_size_gb": 2, "eviction_policy": "noop"})
    assert ok.l1_bytes == 2 << 30 and ok.eviction_policy == "noop"
