"""The log level field shared by both commands (spec: LMCACHE_LOG_LEVEL)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator

from lmcache.app.config.base import flag

__all__ = ("LogLevel", "log_level_field")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], BeforeValidator(_upper)]


def log_level_field() -> Any:
    """A fresh `log_level` field declaration (pydantic fields are not shared between models)."""
    return flag(
        "INFO",
        env="LMCACHE_LOG_LEVEL",
        metavar="LEVEL",
        description="Log level of the lmcache loggers (DEBUG shows L2 store and prefetch activity).",
    )
