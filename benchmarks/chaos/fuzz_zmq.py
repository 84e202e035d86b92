"""ZMQ frame fuzzer: every request answered, the server alive and still serving byte-exact afterwards.

Run: python benchmarks/chaos/fuzz_zmq.py [--frames 10000] [--seed 1] [--url tcp://HOST:PORT]

Without `--url` it starts its own `lmcache server` on loopback. It registers a fake CPU engine (so
store/retrieve reach the transfer code), then sends `--frames` requests through a DEALER socket, at most
64 outstanding: random frame lists, real op ids and names with payloads of random msgpack values (edge
integers, NaN, long strings, nested containers, ext types, valid request keys with one field spoiled),
wrong payload counts, truncated and bit-flipped encodings of valid requests. Every request carries a
unique uid and a non-empty op frame (an empty op frame is a stream control message, which by protocol
gets no answer); a request counts as answered when a reply echoing its uid arrives within `--timeout`.
Then it stores and retrieves through a fresh engine and checks the bytes. Exit 0 only when every request
was answered, the server stayed up and the final round trip was byte-exact.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import Engine, ServerProcess, request_key

from lmcache.adapters.transport.ops import OPS_BY_NAME

enc = msgspec.msgpack.Encoder()
EDGE_INTS = [0, 1, -1, 255, 256, 65535, 2**31 - 1, -(2**31), 2**32, 2**63 - 1, -(2**63), 2**64 - 1]
EDGE_FLOATS = [0.0, -0.0, 1e308, -1e308, float("nan"), float("inf"), float("-inf"), 5e-324]


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-encodable value, biased to edge cases."""
    kind = rng.randrange(12 if depth < 3 else 8)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(EDGE_INTS)
    if kind == 3:
        return rng.randint(-(10**6), 10**6)
    if kind == 4:
        return rng.choice(EDGE_FLOATS)
    if kind == 5:
        return rng.choice(["", "m", "a/b", "x" * rng.choice([1, 300, 70_000]), "\u00e9\u2603", "\x00"])
    if kind == 6:
        return rng.randbytes(rng.choice([0, 1, 16, 1000]))
    if kind == 7:
        return msgspec.msgpack.Ext(rng.choice([1, 2, -1, 127]), rng.randbytes(rng.randint(0, 20)))
    if kind == 8:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if kind == 9:
        return {
            str(rand_value(rng, depth + 1))[:20]: rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))
        }
    if kind == 10:
        return [[rng.choice([*EDGE_INTS, 8, 9, 10]) for _ in range(rng.randint(0, 40))]]
    return spoiled_key(rng)


def spoiled_key(rng: random.Random) -> dict[str, Any]:
    """A valid request key map with one field replaced by a random value (or left valid)."""
    key = msgspec.to_builtins(request_key(4242, rng.randint(0, 50), f"fz-{rng.random()}"))
    if rng.random() < 0.8:
        key[rng.choice(list(key))] = rand_value(rng, 3)
    if rng.random() < 0.1:
        key["unknown_field"] = 1
    return key


def make_request(rng: random.Random) -> list[bytes]:
    """Frames after the uid: an op frame (never empty) and payload frames."""
    style = rng.randrange(5)
    ops = list(OPS_BY_NAME.values())
    op = rng.choice(ops)
    op_frame = enc.encode(op.op_id if op.op_id is not None and rng.random() < 0.7 else op.name)
    count = len(op.payloads)
    if style == 0:  # garbage frames
        frames = [rng.randbytes(rng.randint(1, 12)) for _ in range(rng.randint(1, 6))]
        return [f if f else b"\x00" for f in frames]
    if style == 1:  # a real op, random payload values, sometimes the wrong number of them
        n = count if rng.random() < 0.7 else max(0, count + rng.choice([-2, -1, 1, 2]))
        return [op_frame, *(enc.encode(rand_value(rng)) for _ in range(n))]
    if style == 2:  # unknown ops
        return [enc.encode(rng.choice([0, 11, 99, -5, 2**40, "no_such_op", "", "\x00"])) or b"\xc0"]
    payloads = [enc.encode(spoiled_key(rng)) if i == 0 else enc.encode(rand_value(rng)) for i in range(count)]
    if payloads and style == 3:  # truncate or bit-flip one encoded payload
        i = rng.randrange(len(payloads))
        blob = bytearray(payloads[i])
        if rng.random() < 0.5:
            blob = blob[: rng.randrange(len(blob))] or bytearray(b"\xc1")
        else:
            blob[rng.randrange(len(blob))] ^= 1 << rng.randrange(8)
        payloads[i] = bytes(blob)
    return [op_frame, *payloads]


def fuzz(url: str, frames: int, seed: int, timeout_s: float, window: int = 64) -> tuple[int, int, list[str]]:
    """Send `frames` requests; returns (answered, sent, examples of unanswered requests)."""
    rng = random.Random(seed)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(url)
    pending: dict[bytes, tuple[float, list[bytes]]] = {}
    answered, sent, lost = 0, 0, []
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    while sent < frames or pending:
        while sent < frames and len(pending) < window:
            uid = enc.encode(10_000_000 + sent)
            body = make_request(rng)
            sock.send_multipart([uid, *body])
            pending[uid] = (time.monotonic(), body)
            sent += 1
        if poller.poll(50):
            reply = sock.recv_multipart()
            if pending.pop(reply[0], None) is not None:
                answered += 1
        now = time.monotonic()
        for uid, (at, body) in list(pending.items()):
            if now - at > timeout_s:
                del pending[uid]
                lost.append(repr([b[:40] for b in body])[:200])
    sock.close()
    return answered, sent, lost


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds a request may wait for its reply"
    )
    parser.add_argument("--url", help="fuzz a running server (tcp://HOST:PORT) instead of starting one")
    args = parser.parse_args()
    server = None if args.url else ServerProcess(l1_gb=0.1).start()
    url = args.url or server.zmq_url  # type: ignore[union-attr]
    try:
        engine = Engine(url, 4242)
        engine.register()
        started = time.monotonic()
        answered, sent, lost = fuzz(url, args.frames, args.seed, args.timeout)
        elapsed = time.monotonic() - started
        alive = server is None or server.alive()
        fresh = Engine(url, 4343)
        fresh.register()
        round_trip = fresh.store(7) and fresh.check(7) == "hit"
        fresh.close()
        engine.close()
    finally:
        if server is not None:
            server.stop()
    print(
        f"zmq fuzz: {answered}/{sent} answered in {elapsed:.1f} s ({sent / elapsed:.0f} req/s), "
        f"seed {args.seed}"
    )
    for example in lost[:5]:
        print("  unanswered:", example)
    print(f"server alive: {alive}; store + retrieve afterwards byte-exact: {round_trip}")
    ok = answered == sent and alive and round_trip
    print("verdict:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
