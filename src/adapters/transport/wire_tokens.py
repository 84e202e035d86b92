"""Token ids as they arrived: the raw msgpack array, turned into Python ints only when someone reads them.

Decoding 2,048 token ids into a list costs about as much as the rest of a lookup. A lookup whose token
list was seen before needs none of them: the session's chain or the shared digest cache answers from the
exact wire bytes (`content`). Everything else reads the ints through the `Sequence` interface, which
decodes (and type-checks) them once on first use; a malformed list then fails that op like any bad payload.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import msgspec

__all__ = ("WireTokens", "array_length")

_INTS = msgspec.msgpack.Decoder(list[int])


def array_length(raw: bytes) -> int:
    """The element count in a msgpack array header.

    Raises:
        ValueError: When `raw` does not start with a complete array header.
    """
    if not raw:
        raise ValueError("token_ids is empty, not an array")
    head = raw[0]
    if 0x90 <= head <= 0x9F:
        return head & 0x0F
    width = {0xDC: 2, 0xDD: 4}.get(head)
    if width is None or len(raw) < 1 + width:
        raise ValueError("token_ids is not a msgpack array")
    return int.from_bytes(raw[1 : 1 + width], "big")


class WireTokens(Sequence[int]):
    """A read-only token list over its msgpack encoding.

    Args:
        content: The msgpack array exactly as received.
    """

    __slots__ = ("_count", "_ints", "content")

    def __init__(self, content: bytes) -> None:
        self.content = content
        self._count = array_length(content)
        self._ints: list[int] | None = None

    def ints(self) -> list[int]:
        """The token ids (decoded on first call).

        Raises:
            msgspec.ValidationError: When an element is not an int.
        """
        if self._ints is None:
            self._ints = _INTS.decode(self.content)
        return self._ints

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> list[int]: ...

    def __getitem__(self, index: int | slice) -> int | list[int]:
        return self.ints()[index]

    def __iter__(self) -> Any:
        return iter(self.ints())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, WireTokens):
            return self.content == other.content or self.ints() == other.ints()
        if isinstance(other, Sequence):
            return self.ints() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable-looking sequence semantics, like list

    def __repr__(self) -> str:
        return f"WireTokens({self._count} tokens)"
