"""A user's class named in the config (`module_path`, `class_name`): imported, checked, instantiated.

The plugin and native_plugin adapters load user code alike; every refusal is an L2ConfigError naming the
adapter type, the module and class and what is wrong, so a bad config fails at start-up saying what to fix.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmcache.adapters.storage.errors import L2ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("build_user_class",)


def build_user_class(
    kind: str,
    module_path: str,
    class_name: str,
    params: dict[str, Any],
    is_class: Callable[[object], bool],
    lacking: Callable[[Any], str | None],
) -> Any:
    """`module_path.class_name(**params)`.

    Args:
        kind: The adapter type, in messages.
        module_path: The module to import.
        class_name: The class in it.
        params: Constructor keyword arguments (`adapter_params`).
        is_class: Whether the attribute found is a class this adapter accepts.
        lacking: What the class lacks, as the end of a sentence, or None when it has all it needs.

    Raises:
        L2ConfigError: The module does not import, has no such class, the class lacks something, or its
            constructor rejects `params`.
    """
    where = f"{kind} {module_path}:{class_name}"
    try:
        module = importlib.import_module(module_path)
    except ImportError as exc:
        raise L2ConfigError(f"{where}: cannot import module {module_path!r} ({exc})") from exc
    cls: Any = getattr(module, class_name, None)
    if not is_class(cls):
        raise L2ConfigError(f"{where}: module {module_path!r} has no class {class_name!r}")
    problem = lacking(cls)
    if problem:
        raise L2ConfigError(f"{where} {problem}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise L2ConfigError(f"{where}: adapter_params do not fit its constructor ({exc})") from exc
