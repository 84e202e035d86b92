"""Configuration: pydantic models (the single source of truth), flags generated from them, layered loading."""

from lmcache.app.config.coordinator import CoordinatorConfig
from lmcache.app.config.errors import ConfigError
from lmcache.app.config.loader import dump_config, load_config
from lmcache.app.config.root import ServerConfig

__all__ = ("ConfigError", "CoordinatorConfig", "ServerConfig", "dump_config", "load_config")
