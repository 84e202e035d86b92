"""The one way the CLIs turn a flag's text into a checked number (argparse `type=` converters).

Every numeric flag of `lmcache quota`, `lmcache trace` and `lmcache bench` takes the same two steps (parse,
then range-check) and answers a bad value with a one-line `ArgumentTypeError` ending in `got '<text>'`;
keeping those steps here keeps the messages alike across commands.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ("checked_number",)

N = TypeVar("N", int, float)


def checked_number(
    text: str, parse: Callable[[str], N], expected: str, accept: Callable[[N], bool], refusal: str
) -> N:
    """`parse(text)` when it parses and `accept`s the value.

    Raises:
        argparse.ArgumentTypeError: `expected <expected>, got '<text>'` when it does not parse,
            `<refusal>, got '<text>'` when `accept` refuses it.
    """
    try:
        value = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if not accept(value):
        raise argparse.ArgumentTypeError(f"{refusal}, got {text!r}")
    return value
