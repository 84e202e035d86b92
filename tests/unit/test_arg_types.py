"""The CLIs' numeric flag converters: values they accept and the exact line they refuse others with."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

import pytest

from lmcache.app.bench_args import _run_id
from lmcache.app.ops_cli import _limit_gb, _timeout
from lmcache.app.trace_args import _number, _positive_int, parse_list

if TYPE_CHECKING:
    from collections.abc import Callable


@pytest.mark.parametrize(
    ("convert", "text", "value"),
    [
        (_timeout, "0.5", 0.5),
        (_limit_gb, "0", 0.0),
        (_number, "-2.5", -2.5),
        (_positive_int, "1", 1),
        (_run_id, "ffffffff", 0xFFFFFFFF),
    ],
)
def test_accepts(convert: Callable[[str], Any], text: str, value: Any) -> None:
    assert convert(text) == value


@pytest.mark.parametrize(
    ("convert", "text", "message"),
    [
        (_timeout, "soon", "expected seconds, got 'soon'"),
        (_timeout, "0", "must be a number of seconds > 0, got '0'"),
        (_timeout, "inf", "must be a number of seconds > 0, got 'inf'"),
        (_limit_gb, "lots", "expected a number of GiB, got 'lots'"),
        (_limit_gb, "-1", "must be a finite number >= 0, got '-1'"),
        (_limit_gb, "nan", "must be a finite number >= 0, got 'nan'"),
        (_number, "x", "expected a number, got 'x'"),
        (_number, "inf", "must be finite, got 'inf'"),
        (_positive_int, "1.5", "expected an integer, got '1.5'"),
        (_positive_int, "0", "must be >= 1, got '0'"),
        (_run_id, "xyz", "expected up to 8 hex digits, got 'xyz'"),
        (_run_id, "100000000", "expected up to 8 hex digits, got '100000000'"),
        (lambda t: parse_list(t, "size"), "1,inf", "must be finite, got 'inf'"),
    ],
)
def test_refuses_with_one_line_naming_the_text(
    convert: Callable[[str], Any], text: str, message: str
) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        convert(text)
    assert str(refused.value) == message
