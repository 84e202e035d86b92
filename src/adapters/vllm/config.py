"""The connector's settings: the `lmcache.mp.*` keys of `kv_connector_extra_config` and the KV role.

Keys (configuration-reference.md, "Connector extra_config Keys"): `host`, `port`, `mq_timeout`,
`heartbeat_interval`, `mp_transfer_mode`, plus LMCache 0.5.6's `save_decode_cache` (store chunks that
contain generated tokens; off by default). `mp_transfer_mode` falls back to the `LMCACHE_MP_TRANSFER_MODE`
environment variable when the key is absent.

`ConnectorConfig` is the one declaration of the keys, their defaults and their rules (a pydantic model, as
the server's config is). Its validators keep the messages vLLM users have seen: each names the key (or the
env var) and the value, e.g. `lmcache.mp.port must be in 1..65535, got 70000`. They are lenient where vLLM
is: JSON on the command line makes every value a string, so `"6555"`, `"2.5"` and `"true"` are accepted.

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
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

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
KVRoleName = Literal["kv_both", "kv_producer", "kv_consumer"]
_ROLES: tuple[str, ...] = get_args(KVRoleName)
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


def _bad(rule: str, raw: Any) -> PydanticCustomError:
    """The error a rule raises; `parse_extra_config` puts the key (or env var) in front of it."""
    return PydanticCustomError("lmcache_mp", "{rule}, got {raw}", {"rule": rule, "raw": repr(raw)})


def _host(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise _bad("must be a non-empty host name or URL", raw)
    return raw.strip()


def _port(raw: Any) -> int:
    if isinstance(raw, bool):
        raise _bad("must be an integer port", raw)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise _bad("must be an integer port", raw) from None
    if not 1 <= value <= 65535:
        raise _bad("must be in 1..65535", raw)
    return value


def _seconds(raw: Any) -> float:
    if isinstance(raw, bool):
        raise _bad("must be a number of seconds", raw)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise _bad("must be a number of seconds", raw) from None
    if not math.isfinite(value) or value <= 0:
        raise _bad("must be a positive number of seconds", raw)
    return value


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _bad("must be true or false", raw)


def _mode(raw: Any) -> TransferMode:
    text = str(raw).strip().lower()
    for mode in TRANSFER_MODES:
        if text == mode:
            return mode
    raise _bad(f"must be one of {', '.join(TRANSFER_MODES)}", raw)


Host = Annotated[str, BeforeValidator(_host)]
Port = Annotated[int, BeforeValidator(_port)]
Seconds = Annotated[float, BeforeValidator(_seconds)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Mode = Annotated[TransferMode, BeforeValidator(_mode)]


class ConnectorConfig(BaseModel):
    """The resolved connector settings, one field per `lmcache.mp.*` key; `explicit` names those set."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    host: Host = Field("tcp://localhost", description="Host (with ZMQ transport prefix) of the server.")
    port: Port = Field(5555, description="Port of the server; must match its --port.")
    mq_timeout: Seconds = Field(300.0, description="Timeout (seconds) of blocking requests to the server.")
    heartbeat_interval: Seconds = Field(10.0, description="Seconds between heartbeat pings to the server.")
    mp_transfer_mode: Mode = Field(
        "auto", description=f"auto, engine_driven or lmcache_driven; overrides {ENV_TRANSFER_MODE}."
    )
    save_decode_cache: Flag = Field(False, description="Also store chunks holding generated tokens.")

    @property
    def explicit(self) -> frozenset[str]:
        """The keys the user set (in extra_config, or the mode through its env var)."""
        return frozenset(self.model_fields_set)

    @property
    def server_url(self) -> str:
        """`tcp://host:port` (a host without a scheme gets `tcp://`)."""
        host = self.host if "://" in self.host else f"tcp://{self.host}"
        return f"{host}:{self.port}"

    def describe(self) -> list[str]:
        """One log line per key, marking values the user overrode (the form LMCache logs at start)."""
        lines = []
        for key, field in type(self).model_fields.items():
            note = f" (overridden, default: {field.default})" if key in self.model_fields_set else ""
            lines.append(f"{PREFIX}{key} = {getattr(self, key)}{note}")
        return lines


def parse_extra_config(extra: Mapping[str, Any] | None, env: Mapping[str, str]) -> ConnectorConfig:
    """Resolve the `lmcache.mp.*` keys of `extra` (other keys are ignored) and the transfer-mode env var.

    A key whose value is None counts as absent.

    Raises:
        ConnectorConfigError: A value of the wrong type or out of range; the message names the key.
    """
    given = {
        k.removeprefix(PREFIX): v for k, v in (extra or {}).items() if k.startswith(PREFIX) and v is not None
    }
    source = {key: f"{PREFIX}{key}" for key in given}
    if "mp_transfer_mode" not in given and env.get(ENV_TRANSFER_MODE):
        given["mp_transfer_mode"] = env[ENV_TRANSFER_MODE]
        source["mp_transfer_mode"] = ENV_TRANSFER_MODE
    try:
        return ConnectorConfig.model_validate(given)
    except ValidationError as exc:
        # the mode is resolved last (it may come from the env var): its error shows once the keys are fine
        first = min(exc.errors(), key=lambda error: error["loc"][0] == "mp_transfer_mode")
        raise ConnectorConfigError(f"{source[str(first['loc'][0])]} {first['msg']}") from None


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
