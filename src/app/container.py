"""Composition root: the only module that names concrete classes.

`lmcache server` and `lmcache coordinator` build their container from one validated config; tests swap
providers with `override()` instead of patching modules.
"""

from __future__ import annotations

from dependency_injector import containers, providers

from lmcache.app.config import CoordinatorConfig, ServerConfig
from lmcache.app.l2_factory import build_l2_adapters

__all__ = ("CoordinatorContainer", "ServerContainer")


class ServerContainer(containers.DeclarativeContainer):
    """Object graph of `lmcache server`."""

    config = providers.Dependency(instance_of=ServerConfig)
    l2_adapters = providers.Singleton(build_l2_adapters, specs=config.provided.l2.l2_adapter)


class CoordinatorContainer(containers.DeclarativeContainer):
    """Object graph of `lmcache coordinator`."""

    config = providers.Dependency(instance_of=CoordinatorConfig)
