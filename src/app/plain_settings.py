"""Plain settings for adapters, copied by name from the validated config models.

Adapters never import the app layer, so one that needs configuration values takes a small frozen
dataclass of its own (`HttpSettings`, `CoordinatorSettings`). Its fields are named exactly as the config
fields they carry, and carry no defaults of their own: type, default, bounds and help are declared once,
on the pydantic model, and `plain_settings` copies the values over by name. A field that no section
declares must be given in `overrides` (or keep a default that is not a flag), and a name that two sections
declare is refused, so a renamed config field fails loudly instead of silently falling back.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

__all__ = ("plain_settings",)

T = TypeVar("T")


def plain_settings(cls: type[T], *sections: BaseModel, **overrides: Any) -> T:
    """Build the dataclass `cls` from the fields of the same name in `sections` (`overrides` win).

    Lists become tuples: the settings are frozen and shared between threads.

    Raises:
        ValueError: A field of `cls` is declared by more than one section.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name in overrides:
            continue
        owners = [s for s in sections if field.name in type(s).model_fields]
        if len(owners) > 1:
            names = ", ".join(type(s).__name__ for s in owners)
            raise ValueError(f"{cls.__name__}.{field.name} is declared by several sections: {names}")
        if owners:
            value = getattr(owners[0], field.name)
            values[field.name] = tuple(value) if isinstance(value, list) else value
    return cls(**values, **overrides)
