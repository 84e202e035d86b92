"""Adapters' plain settings are copied by name from the config models, never declared twice."""

from __future__ import annotations

import dataclasses

import pytest
from pydantic import BaseModel

from lmcache.adapters.http.services import HttpSettings
from lmcache.app.config import ServerConfig
from lmcache.app.plain_settings import plain_settings
from tests.unit.config_helpers import server


def test_http_settings_are_server_config_fields_of_the_same_name() -> None:
    sections = [ServerConfig.model_fields[name].annotation for name in ("mp", "l1", "http")]
    declared = set().union(*(section.model_fields for section in sections))  # type: ignore[union-attr]
    names = {f.name for f in dataclasses.fields(HttpSettings)}
    assert names - declared == {"run_script_timeout_s"}
    fields = dataclasses.fields(HttpSettings)
    assert all(f.default is dataclasses.MISSING for f in fields if f.name in declared)  # no second default


def test_http_settings_carry_the_configured_values() -> None:
    config = server(
        [
            "--instance-id", "node-3", "--chunk-size", "512", "--hash-algorithm", "sha256_cbor",
            "--eviction-policy", "noop", "--supported-transfer-mode", "lmcache_driven",
            "--enable-run-script", "--script-allowed-imports", "json",
        ]
    )  # fmt: skip
    settings = plain_settings(HttpSettings, config.mp, config.l1, config.http)
    assert settings == HttpSettings("node-3", 512, "sha256_cbor", "noop", "lmcache_driven", True, ("json",))


class _A(BaseModel):
    x: int = 1


class _B(BaseModel):
    x: int = 2


@dataclasses.dataclass(frozen=True)
class _Plain:
    x: int


def test_a_field_two_sections_declare_is_refused_unless_overridden() -> None:
    with pytest.raises(ValueError, match=r"_Plain\.x is declared by several sections: _A, _B"):
        plain_settings(_Plain, _A(), _B())
    assert plain_settings(_Plain, _A(), _B(), x=3) == _Plain(3)
    assert plain_settings(_Plain, _B()) == _Plain(2)
