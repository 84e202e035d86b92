"""Helpers for the configuration tests: run argv through the generated parser like the CLI does."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from lmcache.app.config import ServerConfig, load_config
from lmcache.app.config.flags import CONFIG_DEST, PRINT_CONFIG_DEST, add_config_flags

if TYPE_CHECKING:
    from pydantic import BaseModel

REQUIRED = ["--l1-size-gb", "1", "--eviction-policy", "LRU"]


def parse_flags(model: type[BaseModel], argv: list[str]) -> dict[str, Any]:
    """Run argv through the generated parser; return the dotted-dest mapping `load_config` takes."""
    parser = argparse.ArgumentParser(argument_default=argparse.SUPPRESS, exit_on_error=False)
    add_config_flags(parser, model)
    parsed = vars(parser.parse_args(argv))
    parsed.pop(CONFIG_DEST, None)
    parsed.pop(PRINT_CONFIG_DEST, None)
    return parsed


def server(argv: list[str] | None = None, **kwargs: Any) -> ServerConfig:
    """A ServerConfig from the required flags plus `argv`."""
    return load_config(ServerConfig, flags=parse_flags(ServerConfig, REQUIRED + (argv or [])), **kwargs)
