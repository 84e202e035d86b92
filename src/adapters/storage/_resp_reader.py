"""Loads of the resp adapter: GET replies received by blocking sockets straight into the L1 buffers.

redis-py's asyncio reader appends every socket read to a growing bytearray, copies the whole value out
as a new bytes object, and takes an event-loop iteration per 64 KiB; the adapter then copied that value
once more into L1. For multi-MiB objects that was three copies and a fresh, page-faulting allocation per
object (benchmarks/l2.py measured loads at 0.35-0.55x of a plain GET). Here a worker thread sends a
batch's GETs in one write and receives each payload with `recv_into` on the destination itself, with the
GIL released: one copy, from the kernel into L1, then the checksum check.

The connections are redis-py's own synchronous ones, built from the adapter's URL, so AUTH, TLS
(`rediss://`) and the URL's options behave exactly as for the asyncio client. Only the replies to our
GETs are read by hand: bulk strings (`$<n>` CRLF, n bytes, CRLF), and a missing key as RESP2's `$-1`
or RESP3's `_` (redis-py negotiates RESP3 where the server has it).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from typing import TYPE_CHECKING

import redis

from lmcache.adapters.storage.object_format import (
    MIN_READ,
    CorruptObjectError,
    ObjectHeader,
    UnusableObjectError,
    check_payload_fits,
    parse_header,
    verify_payload,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from lmcache.domain.keys import ObjectKey

__all__ = ("BlockingGetPool", "LoadCancel")

_MAX_LINE = 64 * 1024  # a reply line longer than this is not RESP we asked for
_RECV = 256 * 1024


def get_commands(names: Sequence[bytes]) -> bytes:
    """Pipelined `GET name` commands in RESP."""
    return b"".join(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(name), name) for name in names)


class _Replies:
    """Reads RESP replies off one socket, keeping what it read ahead of the current reply."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.ahead = bytearray()
        # MSG_WAITALL lets one recv fill a whole payload; SSL sockets refuse flags.
        self.flags = 0 if isinstance(sock, ssl.SSLSocket) else socket.MSG_WAITALL

    def _more(self) -> None:
        chunk = self.sock.recv(_RECV)
        if not chunk:
            raise ConnectionError("redis closed the connection mid-reply")
        self.ahead += chunk

    def _line(self) -> bytes:
        while (end := self.ahead.find(b"\r\n")) < 0:
            if len(self.ahead) > _MAX_LINE:
                raise redis.exceptions.InvalidResponse("reply line too long")
            self._more()
        line = bytes(self.ahead[:end])
        del self.ahead[: end + 2]
        return line

    def _peek(self, n: int) -> bytes:
        """The next `n` bytes, left in place (a copy: a view would pin the buffer's size)."""
        while len(self.ahead) < n:
            self._more()
        return bytes(self.ahead[:n])

    def _skip(self, n: int) -> None:
        while n:
            if not self.ahead:
                self._more()
            step = min(n, len(self.ahead))
            del self.ahead[:step]
            n -= step

    def _into(self, dest: memoryview) -> None:
        """Fill `dest` from the read-ahead bytes, then from the socket directly."""
        done = min(len(self.ahead), dest.nbytes)
        dest[:done] = self.ahead[:done]
        del self.ahead[:done]
        while done < dest.nbytes:
            got = self.sock.recv_into(dest[done:], dest.nbytes - done, self.flags)
            if got == 0:
                raise ConnectionError("redis closed the connection mid-reply")
            done += got

    def _sized_header(self, size: int, dest: memoryview, exact: bool) -> ObjectHeader:
        header = parse_header(self._peek(min(size, MIN_READ)))
        if header.total_size != size:
            raise CorruptObjectError("object size differs from its header")
        check_payload_fits(header.payload_size, dest, exact)
        return header

    def object_into(
        self, key: ObjectKey, dest: memoryview, exact: bool = True
    ) -> CorruptObjectError | bool | int:
        """Read one GET reply: True with the payload in `dest`, False for no such key, or the failed check.

        When not `exact`, the payload goes to the start of `dest` (at least as large) and its size is
        returned instead of True. A reply that fails a check is still read to its end, so the connection
        stays usable.
        """
        line = self._line()
        if line[:1] == b"-":
            return UnusableObjectError(f"redis answered {line[1:200].decode(errors='replace')}")
        if line == b"_":  # RESP3's null (redis-py speaks RESP3 where the server does)
            return False
        if line[:1] == b"!":  # RESP3's blob error
            if not line[1:].isdigit():
                raise redis.exceptions.InvalidResponse(f"bad blob error length {line[:40]!r}")
            self._skip(int(line[1:]) + 2)
            return UnusableObjectError("redis answered with an error")
        if line[:1] != b"$":
            raise redis.exceptions.InvalidResponse(f"unexpected reply {line[:40]!r} to GET")
        try:
            size = int(line[1:])
        except ValueError:
            raise redis.exceptions.InvalidResponse(f"bad bulk length {line[:40]!r}") from None
        if size < 0:
            return False
        try:
            header = self._sized_header(size, dest, exact)
        except CorruptObjectError as exc:
            self._skip(size + 2)
            return exc
        self._skip(header.header_len)
        payload = dest[: header.payload_size]
        self._into(payload)
        if self._line():
            raise redis.exceptions.InvalidResponse("bulk string not followed by CRLF")
        try:
            verify_payload(header, key, payload)  # xxh3 releases the GIL
        except CorruptObjectError as exc:
            return exc
        return True if exact else header.payload_size


class LoadCancel:
    """Lets the event loop stop a load thread (resilience.py's deadline cancels loads).

    A load not started yet skips; a running one's socket is shut down, so its blocked `recv` returns. A
    load still opening a new connection (redis-py's connect and handshake) finishes that first, within
    the adapter's socket timeout.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.cancelled = False

    def attach(self, sock: socket.socket | None) -> bool:
        """Record the socket in use; False when already cancelled."""
        with self._lock:
            self._sock = sock
            return not self.cancelled

    def cancel(self) -> None:
        """Cancel: shut the socket in use down (its connection is then dropped, never reused)."""
        with self._lock:
            self.cancelled = True
            if self._sock is not None:
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)


class BlockingGetPool:
    """Synchronous redis-py connections for loads; `load` runs on a worker thread (one connection each).

    Args:
        url: The adapter's `redis://` or `rediss://` URL (query options included).
        username: ACL user, or None.
        password: Password, or None.
        size: Connections at most (`num_workers`, one per load thread).
        timeout_s: Connect and socket timeout.
    """

    def __init__(
        self, url: str, username: str | None, password: str | None, size: int, timeout_s: float
    ) -> None:
        self._pool = redis.ConnectionPool.from_url(
            url,
            username=username,
            password=password,
            max_connections=size,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
        )

    def load(
        self,
        names: Sequence[bytes],
        keys: Sequence[ObjectKey],
        buffers: Sequence[memoryview],
        cancel: LoadCancel | None = None,
        exact: bool = True,
    ) -> list[CorruptObjectError | bool | int]:
        """GET every name on one connection, each value checked and received into its buffer.

        Raises:
            redis.RedisError, OSError: The connection failed or the load was cancelled (the connection
                is dropped, not reused).
        """
        cancel = cancel or LoadCancel()
        if cancel.cancelled:
            raise redis.exceptions.ConnectionError("load cancelled")
        conn = self._pool.get_connection()
        healthy = False
        try:
            sock = conn._sock  # connected by get_connection; its handshake replies were all read
            if sock is None:
                raise redis.exceptions.ConnectionError("redis connection has no socket")
            if not cancel.attach(sock):
                raise redis.exceptions.ConnectionError("load cancelled")
            sock.sendall(get_commands(names))
            replies = _Replies(sock)
            out = [replies.object_into(key, buf, exact) for key, buf in zip(keys, buffers, strict=True)]
            healthy = not replies.ahead
            return out
        finally:
            if not cancel.attach(None):
                healthy = False  # the socket may have been shut down under the last reply
            if not healthy:
                conn.disconnect()  # type: ignore[no-untyped-call]
            self._pool.release(conn)

    def close(self) -> None:
        """Close every connection."""
        self._pool.disconnect()
