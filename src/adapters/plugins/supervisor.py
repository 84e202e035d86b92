"""Runtime plugins: child processes the server launches, watches, restarts and stops.

One supervisor thread owns every child: it starts them (after the server is ready), polls them, restarts
a crashed one after a backoff that doubles per consecutive crash (1 s, 2 s, 4 s, ... capped), gives up
after `max_restarts` consecutive crashes (state `failed`), and on `stop` sends SIGTERM to each child's
process group, then SIGKILL to what is left after `grace_s`. A plugin that exits with status 0 is done
(state `exited`) and is not restarted; a run longer than `stable_after_s` resets the crash streak.

Each child runs in its own session (so a Ctrl-C at the terminal reaches the server, which stops the
plugins in order, and the process group covers the plugin's own children) and through a tiny launcher
that asks Linux to SIGKILL it when the supervisor thread goes away (`PR_SET_PDEATHSIG`), so no plugin
outlives a server that is killed outright. The launcher, not `preexec_fn`, because `preexec_fn` is not
safe in a process with threads. A plugin's stdout and stderr go to the server log, one line per record,
prefixed with its name (lines are cut at 8 KiB).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from pathlib import Path

__all__ = ("PluginSpec", "PluginSupervisor")

logger = logging.getLogger("lmcache.plugins")
_LINE_MAX = 8192
_POLL_S = 0.1

# Runs in the child before the plugin: SIGKILL on parent-thread death, then exec the plugin. If the
# server died before prctl took effect, the parent pid no longer matches: exit at once.
_LAUNCHER = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """One plugin: its name in logs and `/status`, its file, and the command that runs it."""

    name: str
    path: Path
    argv: tuple[str, ...]


class _Plugin:
    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = "pending"
        self.restarts = 0
        self.crashes = 0
        self.streak = 0
        self.last_exit: int | None = None
        self.started_at = 0.0
        self.next_start = 0.0

    def view(self) -> dict[str, Any]:
        running = self.proc is not None and self.proc.poll() is None
        return {
            "name": self.spec.name,
            "path": str(self.spec.path),
            "pid": self.proc.pid if running and self.proc is not None else None,
            "state": self.state,
            "restarts": self.restarts,
            "crashes": self.crashes,
            "last_exit_code": self.last_exit,
        }


class PluginSupervisor:
    """Launches and supervises runtime plugins.

    Args:
        specs: The plugins, in launch order.
        env: The children's whole environment.
        max_restarts: Consecutive crashes restarted before giving up.
        backoff_s: Delay before the first restart (doubled per consecutive crash).
        backoff_max_s: Longest delay between restarts.
        stable_after_s: A run at least this long resets the crash streak.
        grace_s: Time between SIGTERM and SIGKILL at shutdown.
        clock: Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self,
        specs: Sequence[PluginSpec],
        env: Mapping[str, str],
        *,
        max_restarts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 60.0,
        grace_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._plugins = [_Plugin(s) for s in specs]
        self._env = dict(env)
        self.max_restarts = max_restarts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.stable_after_s = stable_after_s
        self.grace_s = grace_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def status(self) -> list[dict[str, Any]]:
        """Every plugin's name, path, pid (None when not running), state, restarts and last exit code."""
        with self._lock:
            return [p.view() for p in self._plugins]

    def start(self) -> None:
        """Start the supervisor thread, which launches every plugin."""
        if self._thread is None and self._plugins:
            self._thread = threading.Thread(target=self._run, name="lmcache-plugins", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop every plugin (SIGTERM, SIGKILL after the grace period) and the thread; idempotent."""
        self._stopping.set()
        thread = self._thread
        if thread is not None:
            thread.join(self.grace_s + 10.0)
        else:
            self._terminate_all()

    # ------------------------------------------------------------------ supervisor thread
    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                now = self._clock()
                for plugin in self._plugins:
                    self._tend(plugin, now)
                self._stopping.wait(_POLL_S)
        finally:
            self._terminate_all()  # in this thread: the children's PDEATHSIG is tied to it

    def _tend(self, plugin: _Plugin, now: float) -> None:
        proc = plugin.proc
        if proc is not None and proc.poll() is not None:
            self._exited(plugin, proc.returncode, now)
        if plugin.state in ("pending", "backoff") and now >= plugin.next_start:
            self._spawn(plugin, now)

    def _exited(self, plugin: _Plugin, code: int, now: float) -> None:
        name = plugin.spec.name
        with self._lock:
            plugin.proc = None
            plugin.last_exit = code
            if code == 0:
                plugin.state = "exited"
                logger.info("Runtime plugin %s exited with code 0", name)
                return
            plugin.crashes += 1
            plugin.streak = 1 if now - plugin.started_at >= self.stable_after_s else plugin.streak + 1
            if plugin.streak > self.max_restarts:
                plugin.state = "failed"
                logger.error(
                    "Runtime plugin %s exited with code %d; gave up after %d restarts",
                    name,
                    code,
                    plugin.restarts,
                )
                return
            delay = min(self.backoff_max_s, self.backoff_s * 2 ** (plugin.streak - 1))
            plugin.state = "backoff"
            plugin.next_start = now + delay
        logger.warning("Runtime plugin %s exited with code %d; restarting in %.1f s", name, code, delay)

    def _spawn(self, plugin: _Plugin, now: float) -> None:
        spec = plugin.spec
        argv = [sys.executable, "-c", _LAUNCHER, str(os.getpid()), *spec.argv]
        with self._lock:
            if self._stopping.is_set():
                return
            if plugin.state != "pending":
                plugin.restarts += 1
            plugin.started_at = now
            try:
                proc = subprocess.Popen(
                    argv,
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                error: OSError | None = exc
            else:
                error = None
                plugin.proc = proc
                plugin.state = "running"
        if error is not None:
            logger.error("Runtime plugin %s could not be started: %s", spec.name, error)
            self._exited(plugin, 127, now)  # counted and backed off like a crash
            return
        threading.Thread(
            target=_pump, args=(proc, spec.name), name=f"lmcache-plugin-{spec.name}", daemon=True
        ).start()
        logger.info("Started runtime plugin %s (pid %d): %s", spec.name, proc.pid, spec.path)

    def _terminate_all(self) -> None:
        with self._lock:
            live = [p for p in self._plugins if p.proc is not None and p.proc.poll() is None]
            for plugin in self._plugins:
                if plugin.state in ("pending", "backoff", "running"):
                    plugin.state = "stopped"
        for plugin in live:
            _signal_group(plugin.proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for plugin in live:
            proc = plugin.proc
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("Runtime plugin %s ignored SIGTERM; killing it", plugin.spec.name)
            _signal_group(proc, signal.SIGKILL)  # also whatever the plugin started in its group
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5.0)
            plugin.last_exit = proc.returncode
            logger.info("Stopped runtime plugin %s", plugin.spec.name)


def _signal_group(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _pump(proc: subprocess.Popen[bytes], name: str) -> None:
    """Copy a plugin's output into the log, line by line, until it closes its end."""
    stream = proc.stdout
    if stream is None:
        return
    with stream:
        while True:
            line = stream.readline(_LINE_MAX)
            if not line:
                return
            logger.info("[%s] %s", name, line.decode("utf-8", "replace").rstrip("\r\n"))
