"""Generates argparse flags from the config models: one `add_argument` per leaf field.

Values stay strings here; pydantic coerces and bounds-checks them after the layers are merged, so a flag's
rules live only on its field. `argument_default=SUPPRESS` keeps flags the user did not type out of the merge.
"""

from __future__ import annotations

import argparse
import typing
from typing import TYPE_CHECKING, Any

from pydantic_core import PydanticUndefined

from lmcache.app.config.fields import leaf_fields, literal_choices, section_of

if TYPE_CHECKING:
    from pydantic import BaseModel

    from lmcache.app.config.fields import LeafField

__all__ = ("CONFIG_DEST", "PRINT_CONFIG_DEST", "add_config_flags", "default_text")

CONFIG_DEST = "_config_paths"
PRINT_CONFIG_DEST = "_print_config"


def add_config_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """Add `--config`, `--print-config` and one flag per CLI leaf of `model`, grouped by section."""
    parser.add_argument(
        "--config",
        action="append",
        metavar="PATH",
        dest=CONFIG_DEST,
        help="YAML profile; repeatable, later profiles override earlier ones and flags override all. "
        "Mappings merge key by key; lists (e.g. l2_adapter) are replaced whole.",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        dest=PRINT_CONFIG_DEST,
        help="Print the merged, validated configuration as YAML and exit.",
    )
    groups: dict[str, argparse._ArgumentGroup | argparse.ArgumentParser] = {}
    for leaf in leaf_fields(model):
        if not leaf.cli:
            continue
        section = leaf.path[0] if len(leaf.path) > 1 else ""
        if section not in groups:
            title = _section_title(model, section)
            groups[section] = parser.add_argument_group(title) if title else parser
        _add_leaf(groups[section], leaf)


def _section_title(model: type[BaseModel], section: str) -> str | None:
    if not section:
        return None
    nested = section_of(model.model_fields[section])
    doc = (nested.__doc__ or "").strip().splitlines()[0] if nested is not None else ""
    return f"{section}: {doc}" if doc else section


def _add_leaf(group: argparse._ArgumentGroup | argparse.ArgumentParser, leaf: LeafField) -> None:
    kwargs: dict[str, Any] = {"dest": leaf.dest, "help": _help(leaf)}
    base = leaf.base_type
    origin = typing.get_origin(base)
    choices = literal_choices(base)
    if base is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is list and typing.get_args(base) == (str,):
        kwargs.update(nargs="*", metavar=leaf.extra.get("metavar", "VALUE"))
    elif origin is list:
        # Structured list items (the L2 cascade) arrive as JSON, one per repeated flag, in order.
        kwargs.update(action="append", metavar="JSON")
    elif choices is not None:
        kwargs["choices"] = choices
    else:
        kwargs["metavar"] = leaf.extra.get("metavar", "VALUE")
    group.add_argument(leaf.flag, **kwargs)


def default_text(leaf: LeafField) -> str:
    """How `--help` and docs show a field's default."""
    if "default_help" in leaf.extra:
        return str(leaf.extra["default_help"])
    default = leaf.info.default
    if default is PydanticUndefined and leaf.info.default_factory is None:
        return "required"
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "on" if default else "off"
    if default == "":
        return '""'
    if default == []:
        return "none"
    return str(default)


def _help(leaf: LeafField) -> str:
    text = leaf.info.description or ""
    suffix = f"default: {default_text(leaf)}"
    if leaf.env:
        suffix += f"; env {leaf.env}"
    return f"{text} ({suffix})".replace("%", "%%")
