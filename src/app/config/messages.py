"""Turns pydantic validation errors into lines that name where the user wrote the bad value.

`--eviction-ratio: must be <= 1 (got 1.5)`, `prod.yaml: l1.l1_size_gib: unknown key`,
`--l2-adapter #2 (type 'fs'): field 'base_path' is required`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmcache.app.config.base import CROSS_FIELD

if TYPE_CHECKING:
    from pydantic import ValidationError
    from pydantic_core import ErrorDetails

    from lmcache.app.config.layers import Provenance

__all__ = ("describe_errors",)

_L2_LIST = ("l2", "l2_adapter")


def describe_errors(exc: ValidationError, provenance: Provenance) -> list[str]:
    """One message per validation error, de-duplicated, in pydantic's order."""
    lines: list[str] = []
    for err in exc.errors():
        line = _describe(err, provenance)
        if line not in lines:
            lines.append(line)
    return lines


def _describe(err: ErrorDetails, provenance: Provenance) -> str:
    loc = tuple(err["loc"])
    if len(loc) > len(_L2_LIST) and loc[: len(_L2_LIST)] == _L2_LIST:
        return _describe_adapter(err, loc, provenance)
    path = tuple(str(p) for p in loc)
    if err["type"] == CROSS_FIELD:
        return str(err["msg"])  # a rule between fields: its message names the flags itself
    if err["type"] == "missing":
        where = provenance.get(path) or _flag(path)
        return f"{where} is required"
    return f"{_where(path, provenance)}: {_reason(err)}"


def _where(path: tuple[str, ...], provenance: Provenance) -> str:
    if path in provenance:
        return provenance[path]
    for size in range(len(path) - 1, 0, -1):  # a section replaced by a scalar, say
        if path[:size] in provenance:
            return provenance[path[:size]]
    for known, label in provenance.items():  # an unknown section: name the file that brought it
        if known[: len(path)] == path and ":" in label:
            return f"{label.split(':', 1)[0]}: {'.'.join(path)}"
    return _flag(path)


def _flag(path: tuple[str, ...]) -> str:
    return "--" + path[-1].replace("_", "-") if path else "configuration"


def _describe_adapter(err: ErrorDetails, loc: tuple[Any, ...], provenance: Provenance) -> str:
    source = provenance.get(_L2_LIST, "--l2-adapter")
    index = loc[2]
    number = index + 1 if isinstance(index, int) else index
    head = (
        f"--l2-adapter #{number}"
        if source.startswith("--")
        else f"{source.split(':', 1)[0]}: l2.l2_adapter #{number}"
    )
    kind = err["type"]
    ctx = err.get("ctx") or {}
    tag = _tag_problem(kind, ctx)
    if tag and len(loc) < 4:
        return f"{head}: {tag}"
    if len(loc) < 4:
        return f"{head}: {_reason(err)}"
    head += f" (type {loc[3]!r})"
    field = ".".join(str(p) for p in loc[4:])
    if not field:
        return f"{head}: {_reason(err)}"
    if tag:  # a nested typed object (fault_inject's adapter, a serde stage)
        return f"{head}: field {field!r}: {tag}"
    if kind == "missing":
        return f"{head}: field {field!r} is required"
    if kind == "extra_forbidden":
        return f"{head}: unknown field {field!r}"
    return f"{head}: field {field!r}: {_reason(err)}"


def _tag_problem(kind: str, ctx: dict[str, Any]) -> str | None:
    if kind == "union_tag_invalid":
        return f"unknown type {ctx.get('tag')!r} (expected one of: {ctx.get('expected_tags')})"
    if kind == "union_tag_not_found":
        return 'missing the "type" field'
    return None


_BOUND_WORDS = {
    "greater_than": ("must be >", "gt"),
    "greater_than_equal": ("must be >=", "ge"),
    "less_than": ("must be <", "lt"),
    "less_than_equal": ("must be <=", "le"),
}


def _reason(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    got = f" (got {_show(err.get('input'))})"
    if kind in _BOUND_WORDS:
        words, key = _BOUND_WORDS[kind]
        return f"{words} {_show(ctx.get(key))}{got}"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}"
    if kind in ("model_type", "dict_type"):
        return f"must be a mapping{got}"
    msg = str(err.get("msg", "invalid value"))
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if kind == "value_error":
        return msg
    return f"{msg[:1].lower()}{msg[1:]}{got}"


def _show(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return value if value else '""'
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
