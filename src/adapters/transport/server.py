"""The ZMQ ROUTER server (wire-protocol.md §1-2): one socket thread, an affinity pool and a CPU pool.

The socket thread reads frames, resolves the op, decodes its payloads and runs SYNC ops inline (a void
op, the lookup, whose reply is the bare acknowledgement either way, is acknowledged before its handler
runs); AFF and CPU ops go to the pools, which encode their reply and hand it back through a queue plus
an eventfd that the socket thread polls beside the socket. Only the socket thread touches the socket.
Every request is answered: an unknown op gets the 2-frame None reply, a known op that cannot be decoded,
is disabled, is over the in-flight bound, or whose handler raises gets its failure value; each case is
counted.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from lmcache.adapters.transport.ops import mode_allows, resolve
from lmcache.adapters.transport.pools import AffinityPool
from lmcache.adapters.transport.streams import Subscriptions

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from lmcache.adapters.transport.ops import Op
    from lmcache.domain.kv_events import KVEventLog

__all__ = ("ZmqServer",)

logger = logging.getLogger("lmcache.server")
_encoder = msgspec.msgpack.Encoder()
_any = msgspec.msgpack.Decoder()
_ONE = (1).to_bytes(8, "little")
# pyzmq's send_multipart spends about 5 us per reply on type checks and flag enums; small replies (every
# lookup, poll and ping) go frame by frame through the C-level send instead.
_RAW_SEND = zmq.backend.Socket.send
_MORE = int(zmq.SNDMORE)
_ZERO_COPY_BYTES = 65536


class ZmqServer:
    """Serves the op table over a ROUTER socket.

    Args:
        url: `tcp://host:port` to bind.
        handlers: Op name -> handler (decoded payloads in, response out).
        transfer_mode: `--supported-transfer-mode` (which transfer ops are enabled).
        kv_events: The KV-event log behind `subscribe_kv_events`.
        gpu_workers: Affinity threads (`--max-gpu-workers`).
        cpu_workers: CPU pool threads (`--max-cpu-workers`).
        max_in_flight: Requests queued or running in the pools at most; more get their failure value.
        inline_ops: CPU-pool ops cheap enough to run on the socket thread (dictionary reads and L1-only
            lookups): the pool hop costs ~100 us of a ~300 us round trip (benchmarks/data_path.py).
        busy_poll_s: After handling requests, poll without blocking this long (`--busy-poll-us`, 50 us by
            default): a blocked thread's wake-up is part of a small request's latency on a VM, but the
            spinning thread takes a core the client may need (see the flag's description).
    """

    def __init__(
        self,
        url: str,
        handlers: Mapping[str, Callable[..., Any]],
        transfer_mode: str,
        kv_events: KVEventLog,
        gpu_workers: int = 1,
        cpu_workers: int = 1,
        max_in_flight: int = 4096,
        inline_ops: frozenset[str] = frozenset(),
        busy_poll_s: float = 0.0,
    ) -> None:
        self.url = url
        self._handlers = handlers
        self._mode = transfer_mode
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self._socket = self._ctx.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.bind(url)
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self._aff = AffinityPool(gpu_workers)
        self._cpu_pool = ThreadPoolExecutor(cpu_workers, thread_name_prefix="lmcache-cpu")
        self._replies: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._streams = Subscriptions(kv_events, self._send)
        self._pending_unsubscribe: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()
        self.max_in_flight = max_in_flight
        self._inline = inline_ops
        self.busy_poll_s = busy_poll_s
        self.errors: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self._running = threading.Event()
        self._accepting = True
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the socket thread."""
        self._running.set()
        self._thread = threading.Thread(target=self._serve, name="lmcache-zmq", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the socket thread is running (it exits only on stop or a fatal socket error)."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop reading requests, let the pools finish and send their replies, then close the socket."""
        self._accepting = False
        self._aff.shutdown(wait=True)
        self._cpu_pool.shutdown(wait=True)
        self._running.clear()
        self._wakeup()
        if self._thread is not None:
            self._thread.join(drain_timeout_s)
        self._socket.close()
        os.close(self._wake)

    @property
    def in_flight(self) -> int:
        """Requests queued or running in the pools."""
        return self._in_flight

    def close_stream(self, instance_id: int) -> None:
        """End an instance's KV-event stream (thread-safe: done by the socket thread)."""
        self._pending_unsubscribe.put(instance_id)
        self._wakeup()

    # ----------------------------------------------------------- socket thread
    def _wakeup(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake, _ONE)

    def _send(self, frames: list[bytes]) -> None:
        try:
            if len(frames[-1]) >= _ZERO_COPY_BYTES:
                self._socket.send_multipart(frames, copy=False)
            else:
                sock = self._socket
                for frame in frames[:-1]:
                    _RAW_SEND(sock, frame, _MORE)
                _RAW_SEND(sock, frames[-1], 0)
        except zmq.ZMQError as exc:
            logger.debug("Reply to a vanished client dropped: %s", exc)

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        spin_until = 0.0
        while self._running.is_set() or not self._replies.empty():
            timeout = 10 if len(self._streams) else 200
            if spin_until and time.monotonic() < spin_until:
                timeout = 0
            ready = dict(poller.poll(timeout))
            if ready.get(self._wake):
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake, 8)
            self._flush_replies()
            while not self._pending_unsubscribe.empty():
                self._streams.close_instance(self._pending_unsubscribe.get())
            if ready.get(self._socket) and self._accepting:
                for _ in range(256):
                    try:
                        frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=True)
                    except zmq.Again:
                        break
                    try:
                        self._on_request(frames)
                    except Exception:  # never let one request take the socket thread down
                        self.errors["internal"] += 1
                        logger.exception("Request could not be handled; answering with an empty reply")
                        if len(frames) >= 2:
                            self._send([frames[0], frames[1], b""])
                self._flush_replies()
                if self.busy_poll_s:
                    spin_until = time.monotonic() + self.busy_poll_s
            if len(self._streams):
                self._streams.pump()
        self._streams.close_all()
        self._flush_replies()

    def _flush_replies(self) -> None:
        while True:
            try:
                frames = self._replies.get_nowait()
            except queue.Empty:
                return
            self._send(frames)

    def _on_request(self, frames: list[bytes]) -> None:
        identity, rest = frames[0], frames[1:]
        if not rest:
            self.errors["malformed"] += 1
            return
        uid = rest[0]
        if len(rest) == 1:
            self.errors["malformed"] += 1
            self._send([identity, uid, b""])
            return
        op_frame = rest[1]
        if op_frame == b"":
            if len(rest) == 3 and rest[2] in (b"ack", b"cancel"):
                self._streams.control(identity, uid, rest[2])  # stream control: never answered (§1.7)
                return
            self.errors["malformed"] += 1
            self._send([identity, uid, b""])
            return
        try:
            op_value = _any.decode(op_frame)
        except Exception:  # msgspec raises DecodeError, or UnicodeDecodeError for a bad str
            op_value = None
        op, failure, known = self._resolve(op_value)
        if op is None:
            self.errors["unsupported_op" if known else "unknown_op"] += 1
            if not known:
                logger.warning("Unknown op %r; answered with an empty reply", op_value)
            self._reply(identity, uid, op_frame, failure)
            return
        self.requests[op.name] += 1
        args = self._decode(op, rest[2:])
        # a refused registration is handled (logged loudly, listed as failed) by its handler, §1.8
        allowed = op.name == "register_kv_cache" or mode_allows(op, self._mode)
        if args is None or not allowed:
            self.errors[op.name] += 1
            self._reply(identity, uid, op_frame, op.failure)
            return
        if op.pool == "sync" or op.name in self._inline:
            self._run_inline(identity, uid, op_frame, op, args)
        elif op.pool == "stream":
            try:
                self._streams.subscribe(identity, uid, op_frame, *args)
            except Exception as exc:
                self.errors[op.name] += 1
                logger.warning("subscribe_kv_events refused: %s", exc)
                self._reply(identity, uid, op_frame, op.failure)
                self._send([identity, uid, op_frame])
        else:
            self._dispatch(identity, uid, op_frame, op, args)

    def _run_inline(self, identity: bytes, uid: bytes, op_frame: bytes, op: Op, args: list[Any]) -> None:
        if op.void:  # acknowledged first: see Op.void
            self._send([identity, uid, op_frame])
            self._run(op, args)
        else:
            self._reply(identity, uid, op_frame, self._run(op, args))

    def _resolve(self, op_value: object) -> tuple[Op | None, Any, bool]:
        """`resolve`, except that a known op without a handler here is unsupported: answered `[uid, op]`.

        That is every cb_* op of a server started without `--engine-type blend`.
        """
        op, failure, known = resolve(op_value)
        if op is not None and op.pool != "stream" and op.name not in self._handlers:
            return None, None, True
        return op, failure, known

    def _decode(self, op: Op, payloads: list[bytes]) -> list[Any] | None:
        missing = len(op.payloads) - len(payloads)
        if not 0 <= missing <= len(op.defaults) or sum(len(p) for p in payloads) > op.max_bytes:
            return None
        try:
            args = [decoder.decode(data) for decoder, data in zip(op.payloads, payloads, strict=False)]
            return args + list(op.defaults[len(op.defaults) - missing :])
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, TypeError, OverflowError) as exc:
            logger.warning("%s: undecodable payload (%s)", op.name, exc)
            return None

    def _run(self, op: Op, args: list[Any]) -> Any:
        try:
            return self._handlers[op.name](*args)
        except Exception as exc:
            self.errors[op.name] += 1
            logger.warning("%s failed: %s", op.name, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            return op.failure

    def _dispatch(self, identity: bytes, uid: bytes, op_frame: bytes, op: Op, args: list[Any]) -> None:
        with self._in_flight_lock:
            if self._in_flight >= self.max_in_flight:
                self.errors["overloaded"] += 1
                self._reply(identity, uid, op_frame, op.failure)
                return
            self._in_flight += 1

        def job() -> None:
            try:
                self._replies.put(self._frames(identity, uid, op_frame, self._run(op, args)))
            except Exception:
                logger.exception("%s: reply could not be encoded", op.name)
                self._replies.put(self._frames(identity, uid, op_frame, op.failure))
            finally:
                with self._in_flight_lock:
                    self._in_flight -= 1
                self._wakeup()

        if op.pool == "aff":
            self._aff.submit(identity, job)
        else:
            self._cpu_pool.submit(job)

    @staticmethod
    def _frames(identity: bytes, uid: bytes, op_frame: bytes, response: Any) -> list[bytes]:
        if response is None:
            return [identity, uid, op_frame]
        return [identity, uid, op_frame, _encoder.encode(response)]

    def _reply(self, identity: bytes, uid: bytes, op_frame: bytes, response: Any) -> None:
        self._send(self._frames(identity, uid, op_frame, response))
