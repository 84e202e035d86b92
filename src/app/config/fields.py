"""Walks a config model into its leaf fields: the one place that knows how a field maps to its flag.

`flags.py` (argparse), `loader.py` (env table, error messages) and the tests all read this, so a field is
described exactly once, on the model.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from collections.abc import Iterator

    from pydantic.fields import FieldInfo

__all__ = ("LeafField", "leaf_fields", "section_of")


@dataclass(frozen=True)
class LeafField:
    """One configurable value: where it lives in the model and how users spell it."""

    path: tuple[str, ...]
    info: FieldInfo

    @property
    def name(self) -> str:
        """Field name, the last path element (`l1_size_gb`)."""
        return self.path[-1]

    @property
    def flag(self) -> str:
        """CLI spelling (`--l1-size-gb`)."""
        return "--" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        """Dotted location in the merged mapping (`l1.l1_size_gb`), also the argparse dest."""
        return ".".join(self.path)

    @property
    def extra(self) -> dict[str, Any]:
        """What `flag()` stored beside pydantic's own attributes."""
        extra = self.info.json_schema_extra
        return extra if isinstance(extra, dict) else {}

    @property
    def cli(self) -> bool:
        """False for env/YAML-only knobs."""
        return bool(self.extra.get("cli", True))

    @property
    def env(self) -> str | None:
        """Documented environment variable feeding this field, if any."""
        env = self.extra.get("env")
        return env if isinstance(env, str) else None

    @property
    def base_type(self) -> Any:
        """The annotation with `None` taken out of an Optional."""
        return strip_optional(self.info.annotation)


def strip_optional(annotation: Any) -> Any:
    """`X | None` -> `X`; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def literal_choices(annotation: Any) -> list[str] | None:
    """The allowed strings of a `Literal[...]` annotation, else None."""
    if typing.get_origin(annotation) is Literal:
        return [str(arg) for arg in typing.get_args(annotation)]
    return None


def section_of(info: FieldInfo) -> type[BaseModel] | None:
    """The nested model a field holds, when the field is a section rather than a value."""
    annotation = info.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def leaf_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[LeafField]:
    """Every leaf field of `model`, depth first, in declaration order."""
    for name, info in model.model_fields.items():
        section = section_of(info)
        if section is not None:
            yield from leaf_fields(section, (*prefix, name))
        else:
            yield LeafField((*prefix, name), info)
