"""Builds one validated config from its layers: model defaults < YAML profiles < env vars < CLI flags.

Validation runs once, on the merged mapping; every error is reported against the layer that supplied the
value (the provenance kept while merging), as a `ConfigError` the CLI prints before exiting 2.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lmcache.app.config.errors import ConfigError
from lmcache.app.config.fields import section_of
from lmcache.app.config.layers import Provenance, deep_merge, env_layer, flag_layer, read_profile
from lmcache.app.config.messages import describe_errors

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

__all__ = ("dump_config", "load_config")

M = TypeVar("M", bound=BaseModel)


def load_config(
    model: type[M],
    *,
    profiles: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> M:
    """Merge the layers in precedence order and validate the result.

    Args:
        model: The root model (`ServerConfig` or `CoordinatorConfig`).
        profiles: YAML files, applied in order.
        env: The process environment; only the variables the model documents are read.
        flags: argparse's namespace as a dict of dotted dests (only flags the user typed).

    Raises:
        ConfigError: with one line per mistake, each naming the flag, env var or file and key.
    """
    merged: dict[str, Any] = _empty_sections(model)
    provenance: Provenance = {}
    for path in profiles:
        deep_merge(merged, read_profile(path), provenance, partial(_in_file, path))
    for data, labels in (env_layer(model, env or {}), flag_layer(model, flags or {})):
        deep_merge(merged, data, provenance, partial(_label_for, labels))
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(*describe_errors(exc, provenance)) from None


def _empty_sections(model: type[BaseModel]) -> dict[str, Any]:
    """One empty mapping per section, so a missing section reports its own required fields by flag."""
    return {
        name: _empty_sections(section)
        for name, info in model.model_fields.items()
        if (section := section_of(info)) is not None
    }


def _in_file(path: Path, key: tuple[str, ...]) -> str:
    return f"{path}: {'.'.join(key)}"


def _label_for(labels: Mapping[tuple[str, ...], str], path: tuple[str, ...]) -> str:
    for size in range(len(path), 0, -1):
        if path[:size] in labels:
            return labels[path[:size]]
    return ".".join(path)


def dump_config(config: BaseModel) -> str:
    """The effective configuration as YAML, loadable again as a profile."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, default_flow_style=False)
