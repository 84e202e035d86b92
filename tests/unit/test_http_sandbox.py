"""The `/run_script` runner: import allow-list, restricted builtins, output, time limit, one at a time."""

from __future__ import annotations

import time

import pytest

from lmcache.adapters.http.sandbox import MAX_OUTPUT_CHARS, ScriptBusyError, ScriptRunner


def test_allowed_imports_include_submodules_but_not_their_parents() -> None:
    runner = ScriptRunner(["json", "os.path"])
    assert runner.run("import json.decoder\nresult = json.decoder.__name__", 5).result == "json.decoder"
    assert runner.run("from os.path import join\nresult = join('a', 'b')", 5).result == "a/b"
    refused = runner.run("import os.path", 5)  # would bind the whole `os` package
    assert refused.error is not None and "import of 'os.path' is not allowed" in refused.error
    assert "not allowed" in (runner.run("from os import system", 5).error or "")
    assert "not allowed" in (runner.run("from . import x", 5).error or "")


def test_builtins_are_restricted_and_print_is_captured() -> None:
    runner = ScriptRunner([])
    outcome = runner.run("print('a', 1, sep='-')\nprint('b', end='')\nresult = sorted({3, 1})", 5)
    assert outcome.stdout == "a-1\nb" and outcome.result == [1, 3] and outcome.error is None
    for forbidden in ("open", "exec", "eval", "compile", "globals", "input", "breakpoint"):
        failed = runner.run(f"{forbidden}", 5)
        assert failed.error == f"NameError: name '{forbidden}' is not defined"


def test_output_is_bounded_and_results_become_json_safe() -> None:
    runner = ScriptRunner([])
    outcome = runner.run("print('x' * 3_000_000)\nresult = object", 5)
    assert len(outcome.stdout) == MAX_OUTPUT_CHARS
    assert outcome.result == "<class 'object'>"


def test_names_passed_in_are_visible() -> None:
    assert ScriptRunner([]).run("result = server * 2", 5, {"server": 21}).result == 42


def test_a_runaway_script_is_stopped_even_when_it_catches_the_interruption() -> None:
    runner = ScriptRunner([])
    started = time.monotonic()
    source = "while True:\n    try:\n        while True: pass\n    except BaseException: pass"
    outcome = runner.run(source, 0.2)
    assert outcome.timed_out and outcome.error == "script ran past its 0.2 s limit"
    assert time.monotonic() - started < 2
    assert runner.run("result = 'free again'", 1).result == "free again"


def test_one_script_at_a_time_while_one_is_stuck_in_c_code() -> None:
    runner = ScriptRunner(["time"])
    stuck = runner.run("import time\ntime.sleep(1.0)", 0.1)  # sleep cannot be interrupted
    assert stuck.timed_out
    with pytest.raises(ScriptBusyError):
        runner.run("result = 1", 1)
    time.sleep(1.0)
    assert runner.run("result = 1", 1).result == 1


def test_a_syntax_error_raises_before_anything_runs() -> None:
    with pytest.raises(SyntaxError):
        ScriptRunner([]).run("def (", 1)
