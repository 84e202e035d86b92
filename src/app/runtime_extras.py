"""The server lifecycle's steps for storage tracing and runtime plugins (kept out of runtime.py).

Order: `prepare` (constructor: traced engine swapped in, plugins validated), `start_trace` (first thing
in start: the trace file exists before any call is made), `start_plugins` (after the ready line),
`stop_plugins` (first thing in close: no plugin outlives the server, none sees it half torn down),
`close_trace` (after the loops stopped and L2 stores flushed: their calls are in the trace).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.app.config.errors import ConfigError
from lmcache.app.trace_wiring import install_tracing

if TYPE_CHECKING:
    from lmcache.app.container import ServerContainer

__all__ = ("close_trace", "prepare", "start_plugins", "start_trace", "stop_plugins")


def prepare(container: ServerContainer) -> None:
    """Swap in the traced engine when tracing is on and check the plugin locations (ConfigError)."""
    install_tracing(container)
    container.plugins()


def start_trace(container: ServerContainer) -> None:
    """Create the trace file and start its writer (ConfigError naming --trace-output when it cannot)."""
    recorder = container.trace_recorder()
    if recorder is None:
        return
    try:
        recorder.start()
    except OSError as exc:
        raise ConfigError(f"--trace-output: cannot create {recorder.base} ({exc.strerror or exc})") from None


def start_plugins(container: ServerContainer) -> None:
    """Launch the runtime plugins (the server is ready)."""
    plugins = container.plugins()
    if plugins is not None:
        plugins.start()


def stop_plugins(container: ServerContainer) -> None:
    """Stop every runtime plugin (SIGTERM, then SIGKILL after the grace period)."""
    plugins = container.plugins()
    if plugins is not None:
        plugins.stop()


def close_trace(container: ServerContainer) -> None:
    """Write what the recorder still holds and close its file."""
    recorder = container.trace_recorder()
    if recorder is not None:
        recorder.close()
