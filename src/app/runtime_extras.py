"""The server lifecycle's steps for storage tracing and runtime plugins (kept out of runtime.py).

Order: `start_trace` (first thing in start: the trace file exists before any call is made),
`start_plugins` (after the ready line), `stop_plugins` (first thing in close: no plugin outlives the
server, none sees it half torn down), `close_trace` (after the loops stopped and L2 stores flushed: their
calls are in the trace). The container built both (None when not configured); the traced storage engine
is its choice too (`storage_container.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.app.config.errors import ConfigError

if TYPE_CHECKING:
    from lmcache.adapters.plugins.supervisor import PluginSupervisor
    from lmcache.adapters.trace.recorder import LctTraceRecorder

__all__ = ("close_trace", "start_plugins", "start_trace", "stop_plugins")


def start_trace(recorder: LctTraceRecorder | None) -> None:
    """Create the trace file and start its writer (ConfigError naming --trace-output when it cannot)."""
    if recorder is None:
        return
    try:
        recorder.start()
    except OSError as exc:
        raise ConfigError(f"--trace-output: cannot create {recorder.base} ({exc.strerror or exc})") from None


def start_plugins(plugins: PluginSupervisor | None) -> None:
    """Launch the runtime plugins (the server is ready)."""
    if plugins is not None:
        plugins.start()


def stop_plugins(plugins: PluginSupervisor | None) -> None:
    """Stop every runtime plugin (SIGTERM, then SIGKILL after the grace period)."""
    if plugins is not None:
        plugins.stop()


def close_trace(recorder: LctTraceRecorder | None) -> None:
    """Write what the recorder still holds and close its file."""
    if recorder is not None:
        recorder.close()
