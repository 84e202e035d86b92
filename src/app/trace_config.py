"""The engine a replay builds: the configuration a trace recorded, with the flags' overrides on top.

Our headers carry `{"chunk_size", "l1", "l2"}` (`app/trace_wiring.py`); LMCache 0.5.6's carry its
StorageManagerConfig (`l1_manager_config.memory_config.size_in_bytes`, `eviction_config`, ...), mapped
here onto the same L1 fields. The merged L1 section is validated by `L1Config` itself, so a bad override
fails with the flag's name and the same bounds as `lmcache server`. A lookup-hash log records no
configuration: its replays need `--l1-size-gb` and `--eviction-policy`.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from lmcache.app.config.errors import ConfigError
from lmcache.app.config.l1 import L1Config
from lmcache.domain.trace_replay import ReplaySettings
from lmcache.domain.units import GIB, gb_to_bytes

__all__ = ("OVERRIDE_FLAGS", "recorded_config", "replay_settings")

# Replay flags that override an L1 field (flag dest -> field).
OVERRIDE_FLAGS = {
    "l1_size_gb": "l1_size_gb",
    "eviction_policy": "eviction_policy",
    "eviction_trigger_watermark": "eviction_trigger_watermark",
    "eviction_ratio": "eviction_ratio",
    "l1_align_bytes": "l1_align_bytes",
    "l1_write_ttl_seconds": "l1_write_ttl_seconds",
    "l1_read_ttl_seconds": "l1_read_ttl_seconds",
}
_L1_FIELDS = set(L1Config.model_fields)


def _from_056(doc: dict[str, Any]) -> dict[str, Any]:
    l1 = doc.get("l1_manager_config") or {}
    memory = l1.get("memory_config") or {}
    eviction = doc.get("eviction_config") or l1.get("eviction") or {}
    out: dict[str, Any] = {
        "l1": {
            "l1_size_gb": memory.get("size_in_bytes", 0) / GIB or None,
            "l1_align_bytes": memory.get("align_bytes", 4096),
            "l1_write_ttl_seconds": l1.get("write_ttl_seconds", 600),
            "l1_read_ttl_seconds": l1.get("read_ttl_seconds", 300),
            "eviction_policy": eviction.get("eviction_policy"),
            "eviction_trigger_watermark": eviction.get("trigger_watermark", 0.8),
            "eviction_ratio": eviction.get("eviction_ratio", 0.2),
        },
        "l2": {
            "l2_adapter": (doc.get("l2_adapter_config") or {}).get("adapters") or [],
            "l2_prefetch_policy": doc.get("prefetch_policy", "default"),
            "l2_store_policy": doc.get("store_policy", "default"),
        },
    }
    out["l1"] = {k: v for k, v in out["l1"].items() if v is not None}
    return out


def recorded_config(sm_config_json: str) -> dict[str, Any]:
    """`{"l1": {...}, "l2": {...}}` from a header's configuration JSON (empty dicts when it has none)."""
    if not sm_config_json:
        return {"l1": {}, "l2": {}}
    try:
        doc = json.loads(sm_config_json)
    except json.JSONDecodeError:
        return {"l1": {}, "l2": {}}
    if not isinstance(doc, dict):
        return {"l1": {}, "l2": {}}
    if "l1_manager_config" in doc:
        return _from_056(doc)
    l1 = doc.get("l1")
    l2 = doc.get("l2")
    l1 = l1 if isinstance(l1, dict) else {}
    l2 = l2 if isinstance(l2, dict) else {}
    return {"l1": {k: v for k, v in l1.items() if k in _L1_FIELDS}, "l2": l2}


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def replay_settings(
    recorded: dict[str, Any], overrides: dict[str, Any], *, no_l2: bool = False, synthetic_steps: bool = False
) -> ReplaySettings:
    """The replay engine's settings.

    Raises:
        ConfigError: A bad override, or a required value neither recorded nor given.
    """
    l1 = {
        **(recorded.get("l1") or {}),
        **{OVERRIDE_FLAGS[k]: v for k, v in overrides.items() if v is not None},
    }
    try:
        cfg = L1Config.model_validate(l1)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "l1"
            if err["type"] == "missing":
                messages.append(f"{_flag(field)}: required (the input records no value for it)")
            else:
                messages.append(f"{_flag(field)}: {err['msg']} (got {err.get('input')!r})")
        raise ConfigError(*messages) from None
    l2 = recorded.get("l2") or {}
    return ReplaySettings(
        l1_bytes=gb_to_bytes(cfg.l1_size_gb),
        eviction_policy=cfg.eviction_policy,
        align_bytes=cfg.l1_align_bytes,
        trigger_watermark=cfg.eviction_trigger_watermark,
        eviction_ratio=cfg.eviction_ratio,
        write_ttl_s=cfg.l1_write_ttl_seconds,
        read_ttl_s=cfg.l1_read_ttl_seconds,
        prefetch_policy=str(l2.get("l2_prefetch_policy", "default")),
        store_policy=str(l2.get("l2_store_policy", "default")),
        l2=bool(l2.get("l2_adapter")) and not no_l2,
        synthetic_steps=synthetic_steps,
    )
