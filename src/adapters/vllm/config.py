"""The connector's settings: the `lmcache.mp.*` keys of `kv_connector_extra_config` and the KV role.

Keys (configuration-reference.md, "Connector extra_config Keys"): `host`, `port`, `mq_timeout`,
`heartbeat_interval`, `mp_transfer_mode`, plus LMCache 0.5.6's `save_decode_cache` (store chunks that
contain generated tokens; off by default). `mp_transfer_mode` falls back to the `LMCACHE_MP_TRANSFER_MODE`
environment variable when the key is absent.

`mp_transfer_mode` names what the spec (quickstart, configuration reference) names, which is the
opposite of the server's `--supported-transfer-mode` names for the same ops:

- `engine_driven` (spec: "force IPC / SHM zero-copy"): the engine's KV memory is shared with the server
  (CPU tensors migrated to POSIX SHM, CUDA tensors by IPC handle) and the server copies with
  `store`/`retrieve`, the ops a server offers under `--supported-transfer-mode lmcache_driven`.
- `lmcache_driven` (spec: "force worker-side gather/scatter copy"): the worker copies chunks into the
  server's SHM pool with `prepare_*`/`commit_*`, the server's `engine_driven` ops.
- `auto`: `engine_driven` for CUDA tensors, `lmcache_driven` for the others.

`server_ops` maps a mode to the server's name for the ops it uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lmcache.domain.transfer_modes import TRANSFER_MODES, TransferMode

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = (
    "ENV_TRANSFER_MODE",
    "PREFIX",
    "ConnectorConfig",
    "ConnectorConfigError",
    "KVRole",
    "TransferMode",
    "mla_enabled",
    "parse_extra_config",
    "resolve_transfer_mode",
    "server_ops",
)

PREFIX = "lmcache.mp."
ENV_TRANSFER_MODE = "LMCACHE_MP_TRANSFER_MODE"
_MODES: tuple[TransferMode, ...] = TRANSFER_MODES
_ROLES = ("kv_both", "kv_producer", "kv_consumer")
_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


class ConnectorConfigError(ValueError):
    """A bad `lmcache.mp.*` value or kv_role; the message names the key."""


@dataclass(frozen=True, slots=True)
class KVRole:
    """What vLLM's `kv_role` allows: a `kv_consumer` never stores, a `kv_producer` never loads."""

    name: str

    @classmethod
    def parse(cls, value: str | None) -> KVRole:
        """`None` is vLLM's default, `kv_both`."""
        name = value or "kv_both"
        if name not in _ROLES:
            raise ConnectorConfigError(f"kv_role {name!r} is not one of {', '.join(_ROLES)}")
        return cls(name)

    @property
    def can_store(self) -> bool:
        """kv_both and kv_producer store."""
        return self.name != "kv_consumer"

    @property
    def can_load(self) -> bool:
        """kv_both and kv_consumer load."""
        return self.name != "kv_producer"


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    """The resolved connector settings; `explicit` names the keys the user set."""

    host: str = "tcp://localhost"
    port: int = 5555
    mq_timeout: float = 300.0
    heartbeat_interval: float = 10.0
    mp_transfer_mode: TransferMode = "auto"
    save_decode_cache: bool = False
    explicit: frozenset[str] = frozenset()

    @property
    def server_url(self) -> str:
        """`tcp://host:port` (a host without a scheme gets `tcp://`)."""
        host = self.host if "://" in self.host else f"tcp://{self.host}"
        return f"{host}:{self.port}"

    def describe(self) -> list[str]:
        """One log line per key, marking values the user overrode (the form LMCache logs at start)."""
        defaults = ConnectorConfig()
        lines = []
        for key in (
            "host",
            "port",
            "mq_timeout",
            "heartbeat_interval",
            "mp_transfer_mode",
            "save_decode_cache",
        ):
            value, default = getattr(self, key), getattr(defaults, key)
            note = f" (overridden, default: {default})" if key in self.explicit else ""
            lines.append(f"{PREFIX}{key} = {value}{note}")
        return lines


def _positive_float(key: str, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ConnectorConfigError(f"{PREFIX}{key} must be a number of seconds, got {raw!r}")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConnectorConfigError(f"{PREFIX}{key} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConnectorConfigError(f"{PREFIX}{key} must be a positive number of seconds, got {raw!r}")
    return value


def _port(raw: Any) -> int:
    if isinstance(raw, bool):
        raise ConnectorConfigError(f"{PREFIX}port must be an integer port, got {raw!r}")
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConnectorConfigError(f"{PREFIX}port must be an integer port, got {raw!r}") from None
    if not 1 <= value <= 65535:
        raise ConnectorConfigError(f"{PREFIX}port must be in 1..65535, got {raw!r}")
    return value


def _host(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConnectorConfigError(f"{PREFIX}host must be a non-empty host name or URL, got {raw!r}")
    return raw.strip()


def _bool(key: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConnectorConfigError(f"{PREFIX}{key} must be true or false, got {raw!r}")


def _mode(source: str, raw: Any) -> TransferMode:
    text = str(raw).strip().lower()
    for mode in _MODES:
        if text == mode:
            return mode
    raise ConnectorConfigError(f"{source} must be one of {', '.join(_MODES)}, got {raw!r}")


def parse_extra_config(extra: Mapping[str, Any] | None, env: Mapping[str, str]) -> ConnectorConfig:
    """Resolve the `lmcache.mp.*` keys of `extra` (other keys are ignored) and the transfer-mode env var.

    Raises:
        ConnectorConfigError: A value of the wrong type or out of range; the message names the key.
    """
    given = {k.removeprefix(PREFIX): v for k, v in (extra or {}).items() if k.startswith(PREFIX)}
    values: dict[str, Any] = {}
    if given.get("host") is not None:
        values["host"] = _host(given["host"])
    if given.get("port") is not None:
        values["port"] = _port(given["port"])
    for key in ("mq_timeout", "heartbeat_interval"):
        if given.get(key) is not None:
            values[key] = _positive_float(key, given[key])
    if given.get("save_decode_cache") is not None:
        values["save_decode_cache"] = _bool("save_decode_cache", given["save_decode_cache"])
    if given.get("mp_transfer_mode") is not None:
        values["mp_transfer_mode"] = _mode(f"{PREFIX}mp_transfer_mode", given["mp_transfer_mode"])
    elif env.get(ENV_TRANSFER_MODE):
        values["mp_transfer_mode"] = _mode(ENV_TRANSFER_MODE, env[ENV_TRANSFER_MODE])
    return ConnectorConfig(**values, explicit=frozenset(values))


def resolve_transfer_mode(mode: TransferMode, device_type: str) -> Literal["lmcache_driven", "engine_driven"]:
    """`auto` -> `engine_driven` for CUDA tensors, `lmcache_driven` for everything else (spec names)."""
    if mode != "auto":
        return mode
    return "engine_driven" if device_type == "cuda" else "lmcache_driven"


def server_ops(
    mode: Literal["lmcache_driven", "engine_driven"],
) -> Literal["lmcache_driven", "engine_driven"]:
    """The server's `--supported-transfer-mode` name of the ops a (resolved) connector mode uses."""
    return "lmcache_driven" if mode == "engine_driven" else "engine_driven"


def mla_enabled(model_config: Any) -> bool:
    """Whether vLLM runs the model with MLA (one latent KV plane shared by all tensor-parallel ranks)."""
    return bool(getattr(model_config, "use_mla", False))
