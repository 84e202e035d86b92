"""A typed client for every op of wire-protocol.md, used by our tools, benchmarks and tests.

Blocking calls (`call` and the typed methods) go out on a DEALER socket of the calling thread's own and
wait for their reply on it: no hop to another thread either way, which is a third of a lookup's round
trip (benchmarks/data_path.py). `call_async` and KV-event streams use one more DEALER owned by an I/O
thread, whose Futures are matched by uid. Calls on one socket stay in order; a blocking call and an async
one are not ordered with each other. ZMQ reconnects by itself after a server restart; a call that gets no
reply within its timeout raises `TimeoutError` and its late reply is dropped.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import threading
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import msgspec
import zmq

from lmcache.adapters.transport.ops import OPS_BY_NAME
from lmcache.adapters.transport.wire_types import (
    KVEventBatch,
    PrepareRetrieveResponse,
    PrepareStoreResponse,
    RegisterEngineDrivenContextPayload,
    RegisterEngineDrivenContextResponse,
)

if TYPE_CHECKING:
    from lmcache.adapters.transport.wire_types import CacheKey, Descriptor, EngineGroupInfo

__all__ = ("KVEventStream", "LMCacheClient", "normalise_url")

_enc = msgspec.msgpack.Encoder()
_any = msgspec.msgpack.Decoder()
_RESPONSES: dict[str, msgspec.msgpack.Decoder[Any]] = {
    "store": msgspec.msgpack.Decoder(tuple[bytes, bool]),
    "retrieve": msgspec.msgpack.Decoder(tuple[bytes, bool]),
    "register_kv_cache_engine_driven_context": msgspec.msgpack.Decoder(RegisterEngineDrivenContextResponse),
    "prepare_store": msgspec.msgpack.Decoder(PrepareStoreResponse),
    "prepare_retrieve": msgspec.msgpack.Decoder(PrepareRetrieveResponse),
    "subscribe_kv_events": msgspec.msgpack.Decoder(KVEventBatch),
}
_ONE = (1).to_bytes(8, "little")


def _decode_reply(name: str, frames: list[bytes]) -> Any:
    """The reply's payload decoded for op `name` (None for a reply without one)."""
    if len(frames) < 3:
        return None
    return _RESPONSES.get(name, _any).decode(frames[2])


def normalise_url(url: str) -> str:
    """A bare `host:port` gets `tcp://` in front, as LMCache clients do."""
    return url if "://" in url else f"tcp://{url}"


class KVEventStream:
    """The client side of one `subscribe_kv_events` stream."""

    def __init__(self, client: LMCacheClient, uid_frame: bytes) -> None:
        self._client = client
        self._uid = uid_frame
        self.batches: queue.SimpleQueue[KVEventBatch | None] = queue.SimpleQueue()
        self.ended = False

    def next(self, timeout_s: float = 5.0) -> KVEventBatch | None:
        """The next batch, or None when the stream ended; raises TimeoutError when nothing came."""
        try:
            batch = self.batches.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError("no KV-event batch in time") from None
        if batch is None:
            self.ended = True
        return batch

    def ack(self) -> None:
        """Grant the server one more batch."""
        self._client._send([self._uid, b"", b"ack"])

    def cancel(self) -> None:
        """Ask the server to end the stream."""
        self._client._send([self._uid, b"", b"cancel"])


class LMCacheClient:
    """A DEALER client.

    Args:
        url: Server URL (`tcp://host:port`, or a bare `host:port`).
        timeout_s: Default per-call timeout.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = normalise_url(url)
        self.timeout_s = timeout_s
        self._ctx = zmq.Context()
        self._socket = self._dealer()
        self._uids = itertools.count()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._thread_sockets: list[zmq.Socket[bytes]] = []
        self._calls: dict[int, tuple[Future[Any], str]] = {}
        self._streams: dict[bytes, KVEventStream] = {}
        self._out: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._running = True
        self._thread = threading.Thread(target=self._io, name="lmcache-client", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- plumbing
    def _dealer(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self._ctx.socket(zmq.DEALER)
        for option, value in ((zmq.LINGER, 0), (zmq.CONNECT_TIMEOUT, 5000), (zmq.RECONNECT_IVL_MAX, 1000)):
            sock.setsockopt(option, value)
        sock.connect(self.url)
        return sock

    def _thread_socket(self) -> zmq.Socket[bytes]:
        if not self._running:
            raise RuntimeError(f"client of {self.url} is closed")
        sock: zmq.Socket[bytes] | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._dealer()
            self._local.sock = sock
            with self._lock:
                self._thread_sockets.append(sock)
        return sock

    def _send(self, frames: list[bytes]) -> None:
        self._out.put(frames)
        os.write(self._wake, _ONE)

    def _io(self) -> None:
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        while self._running:
            ready = dict(poller.poll(100))
            if ready.get(self._wake):
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake, 8)
            while not self._out.empty():
                self._socket.send_multipart(self._out.get())
            if ready.get(self._socket):
                while True:
                    try:
                        frames = self._socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_reply(frames)
        self._socket.close(0)

    def _on_reply(self, frames: list[bytes]) -> None:
        stream = self._streams.get(frames[0])
        if stream is not None:
            if len(frames) >= 3:
                stream.batches.put(_RESPONSES["subscribe_kv_events"].decode(frames[2]))
            else:
                stream.batches.put(None)
                self._streams.pop(frames[0], None)
            return
        try:
            uid = _any.decode(frames[0])
        except msgspec.DecodeError:
            return
        with self._lock:
            entry = self._calls.pop(uid, None) if isinstance(uid, int) else None
        if entry is None:
            return  # a late reply to a call that timed out
        future, name = entry
        if not future.set_running_or_notify_cancel():
            return  # cancelled by a caller that stopped waiting
        try:
            future.set_result(_decode_reply(name, frames))
        except Exception as exc:
            future.set_exception(exc)

    def call_async(self, name: str, *payloads: Any) -> Future[Any]:
        """Send op `name` with its payloads (all of them, defaults included); the Future gets the reply.

        Cancelling the Future forgets the call: a late reply is then dropped.
        """
        op = OPS_BY_NAME[name]
        uid = next(self._uids)
        future: Future[Any] = Future()
        with self._lock:
            self._calls[uid] = (future, name)
        future.add_done_callback(lambda f: self._forget(uid) if f.cancelled() else None)
        op_frame = _enc.encode(op.op_id if op.op_id is not None else op.name)
        self._send([_enc.encode(uid), op_frame, *(_enc.encode(p) for p in payloads)])
        return future

    def _forget(self, uid: int) -> None:
        with self._lock:
            self._calls.pop(uid, None)

    def call(self, name: str, *payloads: Any, timeout_s: float | None = None) -> Any:
        """Send on this thread's socket and wait there; raises TimeoutError when no reply comes in time."""
        op = OPS_BY_NAME[name]
        sock = self._thread_socket()
        uid = _enc.encode(next(self._uids))
        op_frame = _enc.encode(op.op_id if op.op_id is not None else op.name)
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        try:
            sock.send_multipart([uid, op_frame, *(_enc.encode(p) for p in payloads)], zmq.NOBLOCK)
            while (remaining := deadline - time.monotonic()) > 0 and sock.poll(max(1, int(remaining * 1000))):
                frames = sock.recv_multipart()
                if frames[0] == uid:  # anything else is the late reply of a call that timed out
                    return _decode_reply(name, frames)
        except zmq.Again:
            pass
        raise TimeoutError(f"{name}: no reply from {self.url}")

    def close(self) -> None:
        """Stop the I/O thread and close every socket; calls still waiting on another thread fail."""
        if self._running:
            self._running = False
            self._thread.join(2.0)
            os.close(self._wake)
            with self._lock:
                sockets, self._thread_sockets = self._thread_sockets, []
            for sock in sockets:
                sock.close(0)
            self._ctx.term()

    def __enter__(self) -> LMCacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- typed ops
    def noop(self) -> str:
        """Op 24."""
        return str(self.call("noop"))

    def get_chunk_size(self) -> int:
        """Op 21."""
        return int(self.call("get_chunk_size"))

    def ping(self, instance_id: int | None = None) -> bool:
        """Op 22."""
        return bool(self.call("ping", instance_id))

    def get_experimental(self) -> list[str]:
        """Op 32."""
        return list(self.call("get_experimental"))

    def register_kv_cache(
        self,
        instance_id: int,
        descriptors: list[Descriptor],
        model_name: str,
        world_size: int,
        engine_type: str = "vllm",
        hints: dict[str, Any] | None = None,
        groups: list[EngineGroupInfo] | None = None,
    ) -> None:
        """Op 1 (descriptors are wrapped as ext-1 values)."""
        from lmcache.adapters.transport.wire_types import encode_descriptor

        wrappers = [encode_descriptor(d) for d in descriptors]
        self.call(
            "register_kv_cache",
            instance_id,
            wrappers,
            model_name,
            world_size,
            engine_type,
            hints or {},
            groups or [],
        )

    def unregister_kv_cache(self, instance_id: int) -> None:
        """Op 2."""
        self.call("unregister_kv_cache", instance_id)

    def store(
        self, key: CacheKey, instance_id: int, block_ids: list[list[int]], event: bytes = b""
    ) -> tuple[bytes, bool]:
        """Op 6."""
        ok = self.call("store", key, instance_id, block_ids, event)
        return (bytes(ok[0]), bool(ok[1]))

    def retrieve(
        self,
        key: CacheKey,
        instance_id: int,
        block_ids: list[list[int]],
        event: bytes = b"",
        skip_first_n_tokens: int = 0,
    ) -> tuple[bytes, bool]:
        """Op 7."""
        ok = self.call("retrieve", key, instance_id, block_ids, event, skip_first_n_tokens)
        return (bytes(ok[0]), bool(ok[1]))

    def lookup(self, key: CacheKey, tp_size: int = 1) -> None:
        """Op 8: starts the prefetch; poll its result with `query_prefetch_status`."""
        self.call("lookup", key, tp_size)

    def query_prefetch_status(self, request_id: str) -> int | None:
        """Op 9."""
        result = self.call("query_prefetch_status", request_id)
        return None if result is None else int(result)

    def wait_prefetch_status(self, request_id: str, timeout_s: float) -> int | None:
        """Op 10."""
        result = self.call(
            "wait_prefetch_status", request_id, float(timeout_s), timeout_s=timeout_s + self.timeout_s
        )
        return None if result is None else int(result)

    def free_lookup_locks(self, key: CacheKey, tp_size: int = 1) -> None:
        """Op 12."""
        self.call("free_lookup_locks", key, tp_size)

    def end_session(self, request_id: str) -> None:
        """Op 13."""
        self.call("end_session", request_id)

    def clear(self, force: bool = False) -> None:
        """Op 20."""
        self.call("clear", force)

    def report_block_allocation(self, instance_id: int, model_name: str, records: list[Any]) -> None:
        """Op 23."""
        self.call("report_block_allocation", instance_id, model_name, records)

    def register_engine_driven(
        self, payload: RegisterEngineDrivenContextPayload
    ) -> RegisterEngineDrivenContextResponse:
        """Op 14."""
        result: RegisterEngineDrivenContextResponse = self.call(
            "register_kv_cache_engine_driven_context", payload
        )
        return result

    def unregister_engine_driven(self, instance_id: int) -> None:
        """Op 15."""
        self.call("unregister_kv_cache_engine_driven_context", instance_id)

    def prepare_store(self, key: CacheKey, instance_id: int) -> PrepareStoreResponse:
        """Op 16."""
        result: PrepareStoreResponse = self.call("prepare_store", key, instance_id)
        return result

    def commit_store(self, key: CacheKey, instance_id: int, data: bytes = b"") -> bool:
        """Op 17."""
        return bool(self.call("commit_store", key, instance_id, data))

    def prepare_retrieve(self, key: CacheKey, instance_id: int) -> PrepareRetrieveResponse:
        """Op 18."""
        result: PrepareRetrieveResponse = self.call("prepare_retrieve", key, instance_id)
        return result

    def commit_retrieve(self, key: CacheKey, instance_id: int) -> bool:
        """Op 19."""
        return bool(self.call("commit_retrieve", key, instance_id))

    def subscribe_kv_events(
        self, instance_id: int, model_name: str, cursor: int = 0, max_events: int = 1024
    ) -> KVEventStream:
        """Open a KV-event stream; read batches with `next()`, grant more with `ack()`."""
        uid_frame = _enc.encode(next(self._uids))
        stream = KVEventStream(self, uid_frame)
        self._streams[uid_frame] = stream
        self._send(
            [
                uid_frame,
                _enc.encode("subscribe_kv_events"),
                *(_enc.encode(v) for v in (instance_id, model_name, cursor, max_events)),
            ]
        )
        return stream
