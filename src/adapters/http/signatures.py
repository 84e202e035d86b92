"""The namespace Litestar resolves route annotations from, shared by the server's and the coordinator's apps.

Route modules import their types under TYPE_CHECKING only, so Litestar cannot see them at run time; each
app hands it its schemas module's classes, the parameter markers and its dependency types instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ("signature_namespace",)


def signature_namespace(schemas: ModuleType, *dependencies: type) -> dict[str, object]:
    """Every class `schemas.__all__` names, the route parameter markers and `dependencies`, by name."""
    namespace: dict[str, object] = {
        name: value for name in schemas.__all__ if isinstance(value := getattr(schemas, name), type)
    }
    namespace.update(FromPath=FromPath, FromQuery=FromQuery, JSONBody=JSONBody)
    namespace.update(NamedDependency=NamedDependency)
    namespace.update({dep.__name__: dep for dep in dependencies})
    return namespace
