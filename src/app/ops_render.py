"""Terminal rendering (rich tables) of the operator commands' answers.

Every field is optional: a server that omits one (LMCache 0.5.6 has no `eviction_controller`, for instance)
shows "-" there instead of failing, so the commands work against any server that speaks wire-protocol.md §7.2.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from rich.console import Console

__all__ = (
    "dig",
    "render_clear",
    "render_describe",
    "render_ping",
    "render_quota",
    "render_quota_delete",
    "render_quota_list",
)

MISSING = "-"


def dig(obj: Any, *path: str) -> Any:
    """`obj[p0][p1]...`, or None as soon as a step is missing or not a mapping."""
    for step in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(step)
    return obj


def _first(mapping: Any) -> Any:
    """The first value of a mapping keyed by tag (`l1_managers.<tag>`), or None."""
    return next(iter(mapping.values()), None) if isinstance(mapping, dict) and mapping else None


def _text(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return escape(str(value))  # salts, model names and URLs are not rich markup


def _bytes(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return MISSING
    size, units = float(value), ["B", "KiB", "MiB", "GiB", "TiB"]
    while abs(size) >= 1024 and len(units) > 1:
        size /= 1024
        units.pop(0)
    return f"{int(size)} B" if units[0] == "B" else f"{size:.2f} {units[0]}"


def _ratio(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value * 100:.1f}%"


def _gb(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return MISSING
    return f"{value:.3f} GiB"  # the API's *_gb numbers are binary (bytes / 2^30), as the flags are


def _health(value: Any) -> str:
    if value is None:
        return MISSING
    return "[green]healthy[/]" if value else "[red]unhealthy[/]"


def _kv_table(title: str, rows: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for name, value in rows:
        table.add_row(name, value)
    return table


def render_ping(console: Console, url: str, body: Any, elapsed_ms: float) -> None:
    """`ping kvcache`: one line, the server answered 2xx."""
    status = _text(dig(body, "status"))
    console.print(f"kvcache at {escape(url)}: [green]{status}[/] ({elapsed_ms:.1f} ms)")


def _overview(status: Any) -> list[tuple[str, str]]:
    manager = dig(status, "storage_manager")
    l1 = dig(manager, "l1_manager") or _first(dig(manager, "l1_managers"))
    eviction = dig(manager, "eviction_controller") or _first(dig(manager, "l1_eviction_controllers"))
    used, total = dig(l1, "memory_used_bytes"), dig(l1, "memory_total_bytes")
    return [
        ("Health", _health(dig(status, "is_healthy"))),
        ("Engine", _text(dig(status, "engine_type"))),
        ("Chunk size", _text(dig(status, "chunk_size"))),
        ("Hash algorithm", _text(dig(status, "hash_algorithm"))),
        ("Active sessions", _text(dig(status, "active_sessions"))),
        ("L1 used", f"{_bytes(used)} of {_bytes(total)} ({_ratio(dig(l1, 'memory_usage_ratio'))})"),
        ("L1 objects", _text(dig(l1, "total_object_count"))),
        (
            "L1 retired (awaiting readers)",
            f"{_text(dig(l1, 'retired_object_count'))} ({_bytes(dig(l1, 'retired_bytes'))})",
        ),
        (
            "L1 locks held",
            f"{_text(dig(l1, 'read_locked_object_count'))} read-locked objects "
            f"({_text(dig(l1, 'read_lock_count'))} locks), "
            f"{_text(dig(l1, 'write_locked_object_count'))} write-locked",
        ),
        ("Eviction policy", _text(dig(eviction, "eviction_policy"))),
        ("Eviction watermark", _text(dig(eviction, "trigger_watermark"))),
        ("Eviction ratio", _text(dig(eviction, "eviction_ratio"))),
    ]


def _l2_usage(usage: Any) -> str:
    if not isinstance(usage, dict):
        return MISSING
    used = f"{_bytes(usage.get('used_bytes'))} of {_bytes(usage.get('capacity_bytes'))}"
    return f"{used} ({_ratio(usage.get('usage_ratio'))}), {_text(usage.get('objects'))} objects"


def _l2_table(adapters: list[Any]) -> Table:
    table = Table(title="L2 adapters", title_justify="left")
    for column in ("#", "type", "health", "usage", "details"):
        table.add_column(column, overflow="fold")
    shown = ("index", "type", "is_healthy", "usage")
    for index, adapter in enumerate(adapters):
        entries = adapter.items() if isinstance(adapter, dict) else ()
        details = ", ".join(
            f"{k}={_text(v)}" for k, v in entries if k not in shown and not isinstance(v, dict | list)
        )
        table.add_row(
            str(index),
            _text(dig(adapter, "type")),
            _health(dig(adapter, "is_healthy")),
            _l2_usage(dig(adapter, "usage")),
            details or MISSING,
        )
    return table


def _workers_table(contexts: dict[str, Any], liveness: Any) -> Table:
    table = Table(title="Registered workers", title_justify="left")
    for column in ("instance", "model", "world", "layers", "blocks", "B/token", "groups", "last seen"):
        table.add_column(column, overflow="fold")
    for instance, meta in contexts.items():
        layout = dig(meta, "kv_cache_layout")
        groups = dig(layout, "kernel_groups")
        seen = dig(liveness, str(instance), "seconds_since_seen")
        table.add_row(
            _text(instance),
            _text(dig(meta, "model_name")),
            _text(dig(meta, "world_size")),
            _text(dig(layout, "num_layers")),
            _text(dig(layout, "num_blocks")),
            _text(dig(layout, "cache_size_per_token")),
            str(len(groups)) if isinstance(groups, list) else MISSING,
            MISSING if seen is None else f"{_text(seen)}s ago",
        )
    return table


def render_describe(console: Console, url: str, status: Any) -> None:
    """`describe kvcache`: overview, L2 adapters, registered workers."""
    console.print(_kv_table(f"kvcache at {escape(url)}", _overview(status)))
    adapters = dig(status, "storage_manager", "l2_adapters")
    if isinstance(adapters, list) and adapters:
        console.print(_l2_table(adapters))
    else:
        console.print("L2 adapters: none")
    contexts = dig(status, "cache_context_meta")
    if isinstance(contexts, dict) and contexts:
        console.print(_workers_table(contexts, dig(status, "worker_liveness")))
    else:
        console.print("Registered workers: none")


def render_clear(console: Console, url: str, body: Any) -> None:
    """`kvcache clear`: which tier was cleared, and what stayed (locked, being written, retired)."""
    tier, removed = _text(dig(body, "cleared", "tier")), dig(body, "removed_objects")
    outcome = _text(dig(body, "status")) + ("" if removed is None else f", {_text(removed)} objects removed")
    console.print(f"kvcache at {escape(url)}: cleared tier {tier} ({outcome})")
    locked, writing, retired = (
        dig(body, f) for f in ("locked_objects", "writing_objects", "retired_objects")
    )
    if isinstance(locked, int) and locked:
        console.print(f"  {locked} read-locked objects remain (in use by a lookup; --force removes them)")
    if isinstance(writing, int) and writing:
        console.print(f"  {writing} objects are being written and stay (they land after the clear)")
    if isinstance(retired, int) and retired:
        size = dig(body, "retired_bytes")
        held = f" ({_text(size)} bytes)" if isinstance(size, int) else ""
        console.print(f"  {retired} removed objects keep their memory{held} until their readers let go")


def render_quota(console: Console, body: Any) -> None:
    """`quota set` / `quota get`: one salt's limit and, when known, its usage."""
    limit, usage = dig(body, "limit_gb"), dig(body, "current_usage_gb")
    rows = [("Cache salt", _text(dig(body, "cache_salt"))), ("Limit", _gb(limit))]
    if "current_usage_gb" in (body if isinstance(body, dict) else {}):
        used = (
            usage / limit
            if isinstance(usage, int | float) and isinstance(limit, int | float) and limit
            else None
        )
        rows += [("Usage", f"{_gb(usage)} ({_ratio(used)})"), ("Exists", _text(dig(body, "exists")))]
    if dig(body, "status") is not None:
        rows.append(("Status", _text(dig(body, "status"))))
    if dig(body, "warning") is not None:
        rows.append(("Warning", f"[yellow]{_text(dig(body, 'warning'))}[/]"))
    console.print(_kv_table("Quota", rows))


def render_quota_delete(console: Console, body: Any) -> None:
    """`quota delete`: removed or not found."""
    salt, status = _text(dig(body, "cache_salt")), dig(body, "status")
    if status == "not_found":
        console.print(f"No quota for cache salt {salt}; nothing removed.")
    else:
        console.print(f"Quota for cache salt {salt}: {_text(status)}")


def render_quota_list(console: Console, body: Any) -> None:
    """`quota list`: every salt with a quota."""
    users = dig(body, "users")
    if not isinstance(users, dict) or not users:
        console.print("No quotas set.")
        return
    table = Table(title="Quotas", title_justify="left")
    for column in ("cache salt", "limit", "usage"):
        table.add_column(column, overflow="fold")
    for salt, entry in sorted(users.items()):
        table.add_row(_text(salt), _gb(dig(entry, "limit_gb")), _gb(dig(entry, "current_usage_gb")))
    console.print(table)
