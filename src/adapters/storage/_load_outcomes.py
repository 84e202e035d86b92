"""Objects in and out of the stored format in batches, and what each load's outcome counts as.

A load answers per key True (or the payload size, for `load_sized`), False for a plain miss, or the
failed check; these helpers count the outcomes once, turn them into the port's answers and pick out
the damaged objects to quarantine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lmcache.adapters.storage.object_format import (
    BufferMismatchError,
    CorruptObjectError,
    UnusableObjectError,
    decode_into,
    encode_header,
)

if TYPE_CHECKING:
    import logging
    from collections.abc import Awaitable, Callable, Sequence

    from lmcache.adapters.storage._adapter_state import AdapterCounters
    from lmcache.adapters.storage.object_format import Buffer
    from lmcache.domain.keys import ObjectKey

__all__ = (
    "REREAD_SLACK",
    "Outcome",
    "damaged_keys",
    "decode_all",
    "encode_all",
    "encode_headers",
    "loaded",
    "quarantine_remote",
    "sizes_of",
    "tally_loads",
    "too_large",
)


def encode_all(keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bytes]:
    """Whole stored objects (header + payload), one bulk join each."""
    return [b"".join((encode_header(k, b), b)) for k, b in zip(keys, buffers, strict=True)]


def encode_headers(keys: Sequence[ObjectKey], buffers: Sequence[memoryview]) -> list[bytes]:
    """The header of each object (its payload is sent as is, after it)."""
    return [encode_header(k, b) for k, b in zip(keys, buffers, strict=True)]


# A stored object at most this much larger than expected is read whole to classify it; a larger one is not.
REREAD_SLACK = 1 << 20


def too_large(size: int, expected: int) -> BufferMismatchError | None:
    """Refuse to read whole an object the backend says is far larger than expected.

    The size comes from the backend: trusting it would let a faulty store make us allocate any amount.
    Such an object is a miss (counted as unusable, never quarantined: it may be another layout's).
    """
    if size > expected + REREAD_SLACK:
        return BufferMismatchError(f"stored object of {size} bytes, far larger than the {expected} expected")
    return None


# A load's outcome per key: True (the payload size, for `load_sized`), False for a miss, or the failed check.
Outcome = CorruptObjectError | bool | int


def decode_all(
    keys: Sequence[ObjectKey],
    blobs: Sequence[Buffer | None],
    buffers: Sequence[memoryview],
    exact: bool = True,
) -> list[Outcome]:
    """Verify and copy each blob into its buffer.

    Returns:
        Per blob: True (the payload size unless `exact`), False for a missing blob, or the failed check.
    """
    out: list[Outcome] = []
    for key, blob, buf in zip(keys, blobs, buffers, strict=True):
        if blob is None:
            out.append(False)
            continue
        try:
            size = decode_into(key, blob, buf, exact)
            out.append(True if exact else size)
        except CorruptObjectError as exc:
            out.append(exc)
    return out


def loaded(outcome: object) -> bool:
    """Whether an outcome is a successful load (True, or a payload size)."""
    return outcome is True or (isinstance(outcome, int) and not isinstance(outcome, bool))


def tally_loads(
    counters: AdapterCounters,
    keys: Sequence[ObjectKey],
    outcomes: Sequence[Outcome],
    log: logging.Logger,
    name: str,
) -> list[bool]:
    """Count load outcomes (on the event loop thread) and turn them into the port's answers."""
    for key, outcome in zip(keys, outcomes, strict=True):
        counters.loads += 1
        if not loaded(outcome):
            counters.load_misses += 1
        if isinstance(outcome, CorruptObjectError):
            counters.corrupt += 1
            log.warning("%s L2: corrupt object %s: %s", name, key.short(), outcome)
    return [loaded(outcome) for outcome in outcomes]


def sizes_of(outcomes: Sequence[object]) -> list[int | None]:
    """`load_sized` answers from outcomes that carry payload sizes (anything else is a miss)."""
    return [o if loaded(o) and o is not True else None for o in outcomes]  # type: ignore[misc]


def damaged_keys(keys: Sequence[ObjectKey], outcomes: Sequence[Outcome]) -> list[ObjectKey]:
    """The keys whose stored bytes failed a check (to quarantine); other misses are left alone."""
    return [
        key
        for key, outcome in zip(keys, outcomes, strict=True)
        if isinstance(outcome, CorruptObjectError) and not isinstance(outcome, UnusableObjectError)
    ]


async def quarantine_remote(
    delete: Callable[[Sequence[ObjectKey]], Awaitable[list[bool]]],
    counters: AdapterCounters,
    keys: Sequence[ObjectKey],
    log: logging.Logger,
    name: str,
) -> None:
    """Delete damaged objects from a remote store, so no later lookup finds them again (counted once)."""
    if not keys:
        return
    removed = await delete(keys)
    counters.quarantined += sum(removed)
    log.warning("%s L2: deleted %d damaged object(s) so later lookups miss at once", name, sum(removed))
