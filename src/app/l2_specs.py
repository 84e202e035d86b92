"""What an `--l2-adapter` spec names: its type, class, capacity and serde stages' classes.

Classes are imported only when a spec selects them. An import that fails because an optional client
package is missing names the pip extra that brings it; one that fails inside our own package is a
packaging bug and is shown as it is (uvicorn's `exc.name` rule).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmcache.app.config.errors import ConfigError
from lmcache.domain.units import gb_to_bytes

if TYPE_CHECKING:
    from lmcache.app.config.l2_base import L2SpecBase

__all__ = ("SERDE_IMPLS", "capacity_of", "load_adapter_class", "serde_class", "spec_type")

# serde "type" -> ("module:Class", pip extra of its client or None)
SERDE_IMPLS: dict[str, tuple[str, str | None]] = {
    "fp8": ("lmcache.adapters.storage.serde_fp8:Fp8Serde", None),
    "aesgcm": ("lmcache.adapters.storage.serde_aesgcm:AesGcmSerde", "aesgcm"),
    "zstd": ("lmcache.adapters.storage.serde_zstd:ZstdSerde", "zstd"),
}


def spec_type(spec: L2SpecBase) -> str:
    """The `"type"` string of a spec."""
    return str(getattr(spec, "type", type(spec).__name__))


def load_adapter_class(number: int, spec: L2SpecBase) -> type[Any]:
    """Import the class a spec names, or raise a ConfigError a person can act on."""
    if spec.impl is None:
        raise ConfigError(f"--l2-adapter #{number}: type {spec_type(spec)!r} is not available in this build")
    cls = _import(spec.impl, f"--l2-adapter #{number} (type {spec_type(spec)!r})", spec.pip_extra)
    if not isinstance(cls, type):
        raise ConfigError(f"--l2-adapter #{number}: {spec.impl} is not a class")
    return cls


def capacity_of(spec: L2SpecBase) -> int:
    """The capacity an adapter's spec gives it in bytes (`max_capacity_gb`, mock's `max_size_gb`), or 0."""
    for field in ("max_capacity_gb", "max_size_gb"):
        value = getattr(spec, field, None)
        if isinstance(value, int | float) and value > 0:
            return gb_to_bytes(float(value))
    return 0


def serde_class(label: str, name: str) -> Any:
    """Import the class of the serde stage `name` (a key of SERDE_IMPLS) for the adapter `label`."""
    impl, extra = SERDE_IMPLS[name]
    return _import(impl, f"{label}: serde {name!r}", extra)


def _import(impl: str, user: str, extra: str | None) -> Any:
    """The attribute `impl` ("module:name") names, or None; a missing client package names `extra`."""
    module_name, _, name = impl.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "lmcache":
            raise  # our own module is missing: a packaging bug, shown as it is
        hint = f"; install lmcache[{extra}]" if extra else ""
        raise ConfigError(f"{user} needs the optional package {exc.name!r}{hint}") from exc
    return getattr(module, name, None)
