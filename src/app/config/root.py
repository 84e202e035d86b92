"""`ServerConfig`: the whole validated configuration of `lmcache server`, one section per spec group.

YAML profiles use the section names as top-level keys (`l1: {l1_size_gb: 8}`); flags are the field names.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from lmcache.app.config.base import Section, cross_field
from lmcache.app.config.fleet import CoordinatorClientConfig
from lmcache.app.config.l1 import L1Config
from lmcache.app.config.l2 import L2Config
from lmcache.app.config.logging import LogLevel, log_level_field
from lmcache.app.config.observability import ObservabilityConfig
from lmcache.app.config.server import HttpConfig, MpServerConfig
from lmcache.domain.transfer_modes import serves_engine_driven

__all__ = ("ServerConfig",)


class ServerConfig(Section):
    """Everything `lmcache server` is configured with."""

    log_level: LogLevel = log_level_field()
    mp: MpServerConfig = Field(default_factory=MpServerConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    l1: L1Config
    l2: L2Config = Field(default_factory=L2Config)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    coordinator: CoordinatorClientConfig = Field(default_factory=CoordinatorClientConfig)

    @model_validator(mode="after")
    def _check_l1_medium(self) -> ServerConfig:
        l1 = self.l1
        if l1.l1_devdax_path is not None:
            if l1.gds_l1_path is not None:
                raise cross_field("--l1-devdax-path and --gds-l1-path are two L1 media; set only one")
            if l1.l1_use_lazy:
                raise cross_field(
                    "--l1-devdax-path needs --no-l1-use-lazy (the DAX mapping is not pinned lazily)"
                )
            if serves_engine_driven(self.mp.supported_transfer_mode) and self.mp.shm_name != "":
                raise cross_field(
                    '--l1-devdax-path needs --shm-name "" (the L1 bytes live in the DAX mapping, '
                    "not in a shareable SHM segment)"
                )
        return self

    @model_validator(mode="after")
    def _one_quota_enforcer_per_shared_tier(self) -> ServerConfig:
        # The coordinator applies tenant quotas to a shared L2 fleet-wide; a server's own IsolatedLRU on
        # the same tier would enforce its local quota table against a partial view (evicting.py's rule).
        if not self.coordinator.coordinator_url:
            return self
        for number, spec in enumerate(self.l2.l2_adapter, start=1):
            if spec.shared and spec.eviction is not None and spec.eviction.eviction_policy == "IsolatedLRU":
                raise cross_field(
                    f"--l2-adapter #{number}: eviction_policy IsolatedLRU on a shared adapter conflicts with "
                    "--coordinator-url (the coordinator enforces quotas on a shared L2): use LRU or ARC"
                )
        return self
