"""Builds the ordered L2 cascade from validated specs, importing each backend only when it is selected.

A spec whose backend is not part of this build fails here, at start-up, naming its `--l2-adapter #N`;
a backend whose optional client package is missing names the pip extra that brings it.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import logging
from typing import TYPE_CHECKING, Any

from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.app.config.l2_base import L2SpecBase

__all__ = ("build_l2_adapters", "load_adapter_class")

logger = logging.getLogger(__name__)


def load_adapter_class(number: int, spec: L2SpecBase) -> type[Any]:
    """Import the class a spec names, or raise a ConfigError a person can act on."""
    if spec.impl is None:
        raise ConfigError(f"--l2-adapter #{number}: type {spec_type(spec)!r} is not available in this build")
    module_name, _, class_name = spec.impl.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] == "lmcache":
            raise  # our own module is missing: a packaging bug, shown as it is
        extra = f"; install lmcache[{spec.pip_extra}]" if spec.pip_extra else ""
        raise ConfigError(
            f"--l2-adapter #{number} (type {spec_type(spec)!r}) needs the optional package "
            f"{exc.name!r}{extra}"
        ) from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigError(f"--l2-adapter #{number}: {spec.impl} is not a class")
    return cls


def spec_type(spec: L2SpecBase) -> str:
    """The `"type"` string of a spec."""
    return str(getattr(spec, "type", type(spec).__name__))


def build_l2_adapters(specs: Sequence[L2SpecBase]) -> list[Any]:
    """Construct every adapter in cascade order; on a failure, close the ones already built."""
    built: list[Any] = []
    try:
        for number, spec in enumerate(specs, start=1):
            cls = load_adapter_class(number, spec)
            built.append(cls(**spec.model_dump(exclude={"type"})))
    except BaseException:
        for adapter in reversed(built):
            _close_quietly(adapter)
        raise
    return built


def _close_quietly(adapter: Any) -> None:
    closer = getattr(adapter, "close", None)
    if closer is None:
        return
    try:
        result = closer()
        if inspect.isawaitable(result):
            asyncio.run(_await(result))
    except Exception:
        logger.exception("closing L2 adapter %s after a start-up failure", type(adapter).__name__)


async def _await(awaitable: Any) -> None:
    await awaitable
