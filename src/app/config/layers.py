"""Reads the configuration layers (YAML profiles, the documented env vars, CLI flags) into nested mappings.

Each layer is merged onto the previous one with `deep_merge`, which also records, for every leaf it sets,
where the user wrote it (the provenance used to word validation errors).
"""

from __future__ import annotations

import json
import typing
from typing import TYPE_CHECKING, Any

import yaml

from lmcache.app.config.errors import ConfigError
from lmcache.app.config.fields import leaf_fields

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from pydantic import BaseModel

__all__ = ("Provenance", "deep_merge", "env_layer", "flag_layer", "read_profile")

KeyPath = tuple[str, ...]
Provenance = dict[KeyPath, str]
"""Leaf path -> where its value came from: `--flag`, `ENV_VAR`, or `file.yaml: dotted.key`."""


def read_profile(path: Path) -> dict[str, Any]:
    """Load one YAML profile, or fail naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ConfigError(f"{path}: a profile must be a mapping of section names to settings")
    return data


def env_layer(model: type[BaseModel], env: Mapping[str, str]) -> tuple[dict[str, Any], Provenance]:
    """The values of the env vars the model documents (an explicit table, never a prefix scan)."""
    data: dict[str, Any] = {}
    labels: dict[KeyPath, str] = {}
    for leaf in leaf_fields(model):
        if leaf.env and leaf.env in env:
            _set(data, leaf.path, env[leaf.env])
            labels[leaf.path] = leaf.env
    return data, labels


def flag_layer(model: type[BaseModel], parsed: Mapping[str, Any]) -> tuple[dict[str, Any], Provenance]:
    """Unflatten argparse's dotted dests; structured list items (`--l2-adapter`) are decoded from JSON."""
    data: dict[str, Any] = {}
    labels: dict[KeyPath, str] = {}
    for leaf in leaf_fields(model):
        if leaf.dest not in parsed:
            continue
        value = parsed[leaf.dest]
        if _is_json_list(leaf.base_type):
            value = [_decode_json_item(leaf.flag, n, raw) for n, raw in enumerate(value, start=1)]
        _set(data, leaf.path, value)
        labels[leaf.path] = leaf.flag
    return data, labels


def _is_json_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list and typing.get_args(annotation) != (str,)


def _decode_json_item(flag: str, n: int, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{flag} #{n}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(item, dict):
        raise ConfigError(f'{flag} #{n}: must be a JSON object with a "type" field')
    return item


def _set(data: dict[str, Any], path: KeyPath, value: Any) -> None:
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def deep_merge(
    base: dict[str, Any],
    overlay: Mapping[str, Any],
    provenance: Provenance,
    label: Callable[[KeyPath], str],
    prefix: KeyPath = (),
) -> dict[str, Any]:
    """Merge `overlay` onto `base` in place: mappings key by key, lists and scalars replaced whole."""
    for key, value in overlay.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value, provenance, label, path)
            continue
        for stale in [p for p in provenance if p[: len(path)] == path]:
            del provenance[stale]
        base[key] = _copy(value)
        _record(value, path, provenance, label)
    return base


def _record(value: Any, path: KeyPath, provenance: Provenance, label: Callable[[KeyPath], str]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _record(item, (*path, str(key)), provenance, label)
    else:
        provenance[path] = label(path)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
