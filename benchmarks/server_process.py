"""The one launcher of `lmcache server` subprocesses for the tests, the benchmarks and the scripts.

It picks free loopback ports (ZMQ, HTTP, Prometheus), starts the server with its log in a file, waits for
the ready line, and stops it by PID (SIGTERM, SIGKILL after a grace period), keeping the log.

Why here and why stdlib only: benchmarks are scripts a user runs (`python benchmarks/data_path.py`, whose
directory Python puts on `sys.path`), so the launcher cannot live among the tests; it imports nothing from
lmcache, because `real_client.py` launches the published LMCache 0.5.6 binary with it and the chaos tools
may run against an installed lmcache. Tests import it as `benchmarks.server_process` (pytest puts the repo
root on `sys.path`); `tests/integration/server/conftest.py` adds the engine client on top.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

__all__ = ("OURS", "READY", "ServerProcess", "free_port", "free_ports", "running", "stop_pid")

#: The ready line (ours ends in "...", LMCache 0.5.6's may not).
READY = "LMCache cache server is running"
#: `lmcache server` of the lmcache this Python imports (the checkout, in the project's venv).
OURS = (sys.executable, "-m", "lmcache.app.cli", "server")


def free_ports(n: int) -> list[int]:
    """`n` distinct loopback ports nobody listens on right now (bound together, so never one twice)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    return free_ports(1)[0]


def stop_pid(proc: subprocess.Popen[Any], timeout_s: float = 30.0) -> int | None:
    """SIGTERM by PID, wait (SIGKILL after `timeout_s`); the exit status."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def _flag_value(flags: Sequence[str], name: str) -> str | None:
    """The last value given to `name` in `flags` (argparse keeps the last one)."""
    values = [flags[i + 1] for i, f in enumerate(flags[:-1]) if f == name]
    values += [f.split("=", 1)[1] for f in flags if f.startswith(name + "=")]
    return values[-1] if values else None


class ServerProcess:
    """An `lmcache server` on free loopback ports; `flags` come last, so a flag given there wins.

    Args:
        flags: Extra server flags. A `--port`/`--http-port` among them is what `url`/`http_url` use.
        l1_gb: `--l1-size-gb` (None: leave it to `flags` or `command`).
        command: The server command before the flags (default: this Python's `lmcache server`).
        env: Extra environment, over `os.environ` with usage tracking off.
        log_level: `LMCACHE_LOG_LEVEL` (the ready line is INFO); None keeps the caller's environment.
        log_path: The file that gets the server's stdout and stderr; by default `log_dir/server-PORT.log`,
            or without `log_dir` a temporary file that `stop` removes once `log` keeps its text.
        log_dir: The directory of the default log file.
        new_session: Start it in its own session, so `kill(group=True)` reaches its children too.
        cwd: Its working directory.
        ports: The (ZMQ, HTTP, Prometheus) ports to bind instead of free ones: a restart on the same ports.
    """

    def __init__(
        self,
        *flags: str,
        l1_gb: float | str | None = "0.05",
        command: Sequence[str] = OURS,
        env: Mapping[str, str] | None = None,
        log_level: str | None = "INFO",
        log_path: Path | None = None,
        log_dir: Path | None = None,
        new_session: bool = False,
        cwd: Path | None = None,
        ports: tuple[int, int, int] | None = None,
    ) -> None:
        port, http_port, self.prometheus_port = ports or free_ports(3)
        self.port = int(_flag_value(flags, "--port") or port)
        self.http_port = int(_flag_value(flags, "--http-port") or http_port)
        self.command = [
            *command,
            *("--host", "127.0.0.1", "--port", str(port)),
            *("--http-host", "127.0.0.1", "--http-port", str(http_port)),
            *("--prometheus-port", str(self.prometheus_port), "--eviction-policy", "LRU"),
            *(("--l1-size-gb", str(l1_gb)) if l1_gb is not None else ()),
            *flags,
        ]
        self.env = {**os.environ, "DO_NOT_TRACK": "1", "LMCACHE_TRACK_USAGE": "false", **(env or {})}
        if log_level is not None:
            self.env["LMCACHE_LOG_LEVEL"] = log_level
        if log_path is None and log_dir is not None:
            log_path = log_dir / f"server-{self.port}.log"
        self._own_log = log_path is None
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="lmcache-server-", suffix=".log")
            os.close(fd)
            log_path = Path(name)
        self.log_path = log_path
        self.new_session = new_session
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = 0.0
        self._kept_log: str | None = None

    # ----------------------------------------------------------------------------------- addresses
    @property
    def url(self) -> str:
        """The ZMQ endpoint."""
        return f"tcp://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        """The HTTP frontend (plain HTTP; a TLS test builds its own https URL)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def pid(self) -> int:
        """The server's PID."""
        assert self.proc is not None, "not started"
        return self.proc.pid

    # ---------------------------------------------------------------------------------- life cycle
    def start(self, wait: bool = True, timeout_s: float = 90.0) -> ServerProcess:
        """Spawn it; with `wait`, also wait for the ready line (see `wait_ready`)."""
        with self.log_path.open("ab") as log:
            self.t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                self.command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.new_session,
            )
        if wait:
            self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> float:
        """Seconds from the spawn to the ready line.

        Raises:
            RuntimeError: It exited or the line did not come in time (it is killed); the log's tail.
        """
        assert self.proc is not None, "not started"
        deadline = time.perf_counter() + timeout_s
        while READY not in self.log():
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                code = self.proc.poll()
                self.kill()
                raise RuntimeError(f"server not ready (exit code {code}); log tail:\n{self.log()[-4000:]}")
            time.sleep(0.02)
        return time.perf_counter() - self.t0

    def wait_exit(self, timeout_s: float = 60.0) -> int | None:
        """Wait for it to exit by itself (a start-up error); the exit status (killed after `timeout_s`)."""
        assert self.proc is not None, "not started"
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self._release_log()
        return self.proc.returncode

    def alive(self) -> bool:
        """Whether the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM by PID and wait (SIGKILL after `timeout_s`); the exit status (None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._release_log()
        return self.proc.returncode

    def kill(self, sig: int = signal.SIGKILL, group: bool | None = None) -> None:
        """Send `sig`; after SIGKILL or SIGTERM, wait up to 30 s for it to exit.

        With `group` (default: when it was started with `new_session`), to its whole session, its resource
        tracker included.
        """
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.new_session if group is None else group:
                os.killpg(self.proc.pid, sig)
            else:
                os.kill(self.proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)

    # ------------------------------------------------------------------------------------------- log
    def log(self) -> str:
        """Everything it logged so far."""
        if self._kept_log is not None:
            return self._kept_log
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout_s: float = 10.0) -> str:
        """Wait until the log matches the regular expression; the match, or an AssertionError with the log.

        A reply can reach a client before the server's log line for it reaches the file.
        """
        deadline = time.monotonic() + timeout_s
        while (found := re.search(pattern, self.log())) is None:
            assert time.monotonic() < deadline, f"no {pattern!r} in the server log:\n{self.log()}"
            time.sleep(0.02)
        return found.group(0)

    def _release_log(self) -> None:
        """Keep the text of a temporary log and remove the file (once the process is gone)."""
        if self._own_log and self._kept_log is None:
            self._kept_log = self.log()
            self.log_path.unlink(missing_ok=True)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def running(*flags: str, timeout_s: float = 90.0, **options: Any) -> Iterator[ServerProcess]:
    """A started, ready server (`ServerProcess` arguments), stopped by PID on exit."""
    server = ServerProcess(*flags, **options)
    try:
        yield server.start(timeout_s=timeout_s)
    finally:
        server.stop()
