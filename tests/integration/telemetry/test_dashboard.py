"""examples/grafana/lmcache.json queries only metrics a real server exports, and covers what operators watch.

A server with an L2 adapter (so the L2 and circuit-breaker families exist) takes a few stores and lookups;
its /metrics exposition is the list of names the dashboard may use: sample names, and for families that
have no sample yet (a labelled counter before its first event) the names their type produces.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.http.frontend import frontend

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "examples" / "grafana" / "lmcache.json"
MOCK_L2 = '{"type": "mock", "max_size_gb": 0.01, "mock_bandwidth_gb": 10}'
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
# A metric name in PromQL: an identifier directly followed by a label selector.
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\{")
OURS = re.compile(r"\blmcache_[a-z0-9_]+\b")


def _exported() -> set[str]:
    with frontend("--l2-adapter", MOCK_L2, "--metrics-sample-rate", "1") as fe:
        for seq in range(3):
            tokens = fe.store(seq)
            fe.hits(tokens, f"dash-{seq}")
        with urllib.request.urlopen(f"{fe.server.http_url}/metrics", timeout=10) as reply:
            text = reply.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type not in SUFFIXES:  # a counter or histogram is queried by its suffixed series only
            names.add(family.name)
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ()))
    return names


def _targets(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


@pytest.fixture(scope="module")
def exported() -> set[str]:
    return _exported()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_every_query_names_an_exported_metric(dashboard: dict[str, Any], exported: set[str]) -> None:
    targets = _targets(dashboard)
    assert len(targets) >= 20
    for title, expr in targets:
        used = set(SELECTOR.findall(expr)) | set(OURS.findall(expr))
        assert used, f"{title}: {expr} names no metric"
        assert used <= exported, f"{title}: {sorted(used - exported)} is not exported by the server"
    variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "instance")
    assert set(OURS.findall(variable["definition"])) <= exported


def test_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    text = " ".join(expr for _, expr in _targets(dashboard))
    for needed in (
        "lmcache_mp_lookup_hit_tokens_total",  # hit rate
        "lmcache_mp_store_bytes_total",  # store / retrieve throughput
        "lmcache_mp_retrieve_bytes_total",
        "histogram_quantile(0.99, sum by (le) (rate(lmcache_mp_store_duration_seconds_bucket",  # latency
        "histogram_quantile(0.5, sum by (le) (rate(lmcache_mp_retrieve_duration_seconds_bucket",
        "lmcache_mp_l1_usage_bytes",  # L1 usage
        "lmcache_mp_l2_stored_bytes_total",  # L2 traffic
        "lmcache_mp_l1_evicted_bytes_total",  # evictions
        "lmcache_mp_l2_circuit_breaker_state",  # breaker state
        "lmcache_mp_workers_registered",  # worker count
        "lmcache_mp_event_bus_dropped_events_total",  # event-bus drops
    ):
        assert needed in text, needed


def test_dashboard_is_a_provisionable_grafana_model(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] == "lmcache-server" and dashboard["schemaVersion"] >= 36
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    sizes = {p["fieldConfig"]["defaults"].get("unit") for p in dashboard["panels"] if p["type"] != "row"}
    assert "Bps" not in sizes and "decbytes" not in sizes  # binary units, as the server's flags


def test_prometheus_example_scrapes_the_metrics_path() -> None:
    config = yaml.safe_load((ROOT / "examples" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"lmcache-server", "lmcache-coordinator"}
    assert all(job["metrics_path"] == "/metrics" for job in jobs.values())
