"""Building blocks shared by every configuration model.

A field is declared once, with `flag()`: its name is the CLI flag (`l1_size_gb` <-> `--l1-size-gb`), its
description is the `--help` text, and its default and bounds are enforced by pydantic. `flags.py` turns the
models into argparse, `loader.py` layers YAML, env and flags onto them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("CROSS_FIELD", "Section", "cross_field", "flag")

CROSS_FIELD = "cross_field"


class Section(BaseModel):
    """Base of every config model: unknown keys are errors and a built config never changes."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=False, allow_inf_nan=False)


def flag(
    default: Any = ...,
    *,
    description: str,
    metavar: str | None = None,
    default_help: str | None = None,
    env: str | None = None,
    cli: bool = True,
    default_factory: Callable[[], Any] | None = None,
    **bounds: Any,
) -> Any:
    """Declare one configuration field together with everything its flag needs.

    Args:
        default: The documented default; `...` marks a required field.
        description: Help text; says what the value means, not its default (added automatically).
        metavar: Placeholder shown in `--help`.
        default_help: How `--help` shows the default when the value itself would mislead
            (computed or inherited defaults).
        env: The documented environment variable that feeds this field (between profiles and flags).
        cli: False for env/YAML-only knobs that the spec gives no flag.
        default_factory: Builds the default at validation time (e.g. a fresh UUID).
        **bounds: pydantic constraints (`gt`, `ge`, `le`, `lt`, `min_length`, ...).
    """
    extra: dict[str, Any] = {"cli": cli}
    if metavar:
        extra["metavar"] = metavar
    if default_help:
        extra["default_help"] = default_help
    if env:
        extra["env"] = env
    if default_factory is not None:
        return Field(
            default_factory=default_factory, description=description, json_schema_extra=extra, **bounds
        )
    return Field(default, description=description, json_schema_extra=extra, **bounds)


def cross_field(message: str) -> PydanticCustomError:
    """An error from a rule between fields; its message names the flags involved, so it is shown as is."""
    return PydanticCustomError(CROSS_FIELD, message.replace("{", "{{").replace("}", "}}"))
