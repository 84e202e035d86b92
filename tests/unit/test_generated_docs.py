"""docs/configuration.md is generated from the config models; it fails here when it no longer matches them."""

from __future__ import annotations

from pathlib import Path

from lmcache.app.config import ServerConfig
from lmcache.app.config.fields import leaf_fields
from lmcache.app.config_docs import render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "configuration.md"


def test_configuration_page_is_current() -> None:
    assert PAGE.read_text() == render(), "docs/configuration.md is stale: run scripts/gen-docs"


def test_page_lists_every_flag_with_default_env_and_help() -> None:
    rows = {line.split(" | ")[1]: line for line in render().splitlines() if line.startswith("| `--")}
    for leaf in leaf_fields(ServerConfig):
        key = f"`{leaf.dest}`"
        assert key in rows, leaf.flag
        assert (leaf.info.description or "")[:40] in rows[key]
        if leaf.env:
            assert f"`{leaf.env}`" in rows[key]
    assert (
        "| `--eviction-policy` | `l1.eviction_policy` | `LRU`, `IsolatedLRU`, `noop` | `required` |"
        in render()
    )
    assert "| `--l1-use-lazy` / `--no-l1-use-lazy` | `l1.l1_use_lazy` | switch | `on` |" in render()


def test_page_documents_every_l2_adapter_type() -> None:
    page = render()
    for kind in ("fs", "mock", "resp", "s3", "plugin", "fault_inject", "nixl_store", "dax"):
        assert f"### `{kind}`" in page, kind
    assert "| `base_path` |" in page and "Needs `pip install lmcache[redis]`." in page
