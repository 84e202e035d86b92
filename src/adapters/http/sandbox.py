"""Runs an operator's script with restricted builtins, an import allow-list and a time limit.

This is a guard rail against mistakes, not a security boundary: CPython cannot sandbox Python code
in-process (attribute walks reach everything). That is why `/run_script` is off unless the operator turns
it on. The script runs on its own daemon thread; `print` writes to a bounded buffer returned to the
caller, and the script's `result` variable is returned too. Past the time limit an exception is raised
in the script thread asynchronously (`PyThreadState_SetAsyncExc`, which a trace function cannot replace:
CPython emits no line events inside `while True: pass`). A call blocked inside C code cannot be
interrupted; its thread is left to finish, and no new script starts until it has.
"""

from __future__ import annotations

import builtins
import ctypes
import importlib
import io
import json
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = ("SAFE_BUILTINS", "ScriptBusyError", "ScriptOutcome", "ScriptRunner", "ScriptTimeout")

MAX_OUTPUT_CHARS = 1 << 20
_SAFE_NAMES = """
abs all any ascii bin bool bytearray bytes callable chr complex dict divmod enumerate filter float format
frozenset hash hex int isinstance issubclass iter len list map max min next object oct ord pow range repr
reversed round set slice sorted str sum tuple zip super property staticmethod classmethod __build_class__
Exception ValueError TypeError KeyError IndexError RuntimeError ZeroDivisionError ArithmeticError
LookupError AttributeError ImportError ModuleNotFoundError NameError AssertionError StopIteration
NotImplementedError OverflowError TimeoutError
"""
SAFE_BUILTINS = frozenset(_SAFE_NAMES.split())
_STOP_ATTEMPTS = 3  # a script may catch the first interruption; ask again


class ScriptTimeout(BaseException):
    """Raised inside a script that ran past its limit (a BaseException: `except Exception` keeps off it)."""


def _interrupt(thread: threading.Thread) -> None:
    if thread.ident is not None:
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(ScriptTimeout)
        )


class ScriptBusyError(RuntimeError):
    """Another script (or a timed-out one still stuck in C code) is running."""


@dataclass(frozen=True, slots=True)
class ScriptOutcome:
    """What a run produced: printed text, the `result` variable (JSON-safe), and the error if it failed."""

    stdout: str
    result: Any
    error: str | None = None
    timed_out: bool = False


class _Output(io.StringIO):
    def write(self, text: str) -> int:
        room = MAX_OUTPUT_CHARS - self.tell()
        return super().write(text[: max(room, 0)])


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class ScriptRunner:
    """Runs one script at a time.

    Args:
        allowed_imports: Modules scripts may import (`--script-allowed-imports`); a submodule of an allowed
            module is allowed too.
    """

    def __init__(self, allowed_imports: Iterable[str]) -> None:
        self.allowed = tuple(sorted(set(allowed_imports)))
        self._guard = threading.Lock()
        self._current: threading.Thread | None = None

    def _allows(self, name: str) -> bool:
        return any(name == m or name.startswith(m + ".") for m in self.allowed)

    def _import(
        self, name: str, globals_: Any = None, locals_: Any = None, fromlist: Any = (), level: int = 0
    ) -> Any:
        top = name.partition(".")[0]
        # `import a.b` binds `a`, so the top package must be allowed too unless names are picked (`from`)
        if level != 0 or not self._allows(name) or (not fromlist and not self._allows(top)):
            listed = ", ".join(self.allowed) or "none"
            raise ImportError(f"import of {name!r} is not allowed (--script-allowed-imports: {listed})")
        return importlib.__import__(name, globals_, locals_, fromlist, 0)

    def _builtins(self, out: io.StringIO) -> dict[str, Any]:
        table = {name: getattr(builtins, name) for name in SAFE_BUILTINS}

        def _print(*args: Any, sep: str | None = " ", end: str | None = "\n", **_: Any) -> None:
            out.write((" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end))

        table.update(print=_print, __import__=self._import)
        return table

    def run(self, source: str, timeout_s: float, names: Mapping[str, Any] | None = None) -> ScriptOutcome:
        """Compile and run `source`; raises SyntaxError for a script that does not compile.

        Raises:
            SyntaxError: The script does not compile.
            ScriptBusyError: Another script is still running.
        """
        code = compile(source, "<run_script>", "exec")
        out = _Output()
        scope: dict[str, Any] = {"__builtins__": self._builtins(out), "__name__": "__run_script__"}
        scope.update(names or {})
        failure: list[BaseException] = []
        finished: list[bool] = []

        def main() -> None:
            try:
                exec(code, scope)
                finished.append(True)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=main, name="lmcache-run-script", daemon=True)
        with self._guard:  # the previous script's thread, possibly still stuck in C code
            if self._current is not None and self._current.is_alive():
                raise ScriptBusyError("another script is still running")
            self._current = thread
            thread.start()
        thread.join(timeout_s)
        interrupted = False
        for _ in range(_STOP_ATTEMPTS):
            if not thread.is_alive():
                break
            interrupted = True
            _interrupt(thread)
            thread.join(0.2)
        if thread.is_alive() or (interrupted and not finished):
            return ScriptOutcome(out.getvalue(), None, f"script ran past its {timeout_s:g} s limit", True)
        if failure:
            exc = failure[0]
            return ScriptOutcome(out.getvalue(), None, f"{type(exc).__name__}: {exc}")
        return ScriptOutcome(out.getvalue(), _json_safe(scope.get("result")))
