"""Malformed traffic: every request is answered and the server keeps serving (wire-protocol.md §1.8, §9.1)."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import msgspec
import zmq

from tests.integration.server.conftest import Engine, hit_chunks, key, tokens_for

if TYPE_CHECKING:
    from tests.integration.server.conftest import RunningServer

enc = msgspec.msgpack.Encoder()
BLOCKS = list(range(8, 40))


def _dealer(url: str) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(url)
    return sock


def _ask(sock: zmq.Socket[bytes], frames: list[bytes]) -> list[bytes]:
    sock.send_multipart(frames)
    return sock.recv_multipart()


def test_malformed_requests_get_answers(server: RunningServer) -> None:
    sock = _dealer(server.url)
    try:
        uid = enc.encode(1)
        # unknown id / name / retired id 11: the None form, echoing uid and op byte for byte
        assert _ask(sock, [uid, enc.encode(99)]) == [uid, enc.encode(99)]
        assert _ask(sock, [uid, enc.encode("no_such_op")]) == [uid, enc.encode("no_such_op")]
        assert _ask(sock, [uid, enc.encode(11)]) == [uid, enc.encode(11)]
        # a uid frame alone (kills LMCache's loop) and a non-msgpack op frame
        assert _ask(sock, [b"\xde\xad"])[0] == b"\xde\xad"
        assert _ask(sock, [uid, b"\xc1\xff"])[:2] == [uid, b"\xc1\xff"]
        # wrong frame counts and wrong payload types: the op's failure value
        assert _ask(sock, [uid, enc.encode(21), b"extra"]) == [uid, enc.encode(21)]
        assert _ask(sock, [uid, enc.encode(9)]) == [uid, enc.encode(9), enc.encode(0)]
        assert _ask(sock, [uid, enc.encode(9), enc.encode(5)]) == [uid, enc.encode(9), enc.encode(0)]
        fail = enc.encode((b"", False))
        assert _ask(sock, [uid, enc.encode(6), b"\x01", b"\x02", b"\x03", b"\x04"])[2] == fail
        bad_salt = {
            "model_name": "m",
            "world_size": 1,
            "worker_id": 0,
            "token_ids": [1],
            "start": 0,
            "end": 1,
            "request_id": "r",
            "cache_salt": "a/b",
        }
        assert (
            _ask(
                sock,
                [uid, enc.encode(6), enc.encode(bad_salt), enc.encode(1), enc.encode([[1]]), enc.encode(b"")],
            )[2]
            == fail
        )
        # an oversized payload is refused without being decoded
        huge = b"\xc6" + (80 << 20).to_bytes(4, "big") + bytes(80 << 20)
        assert _ask(sock, [uid, enc.encode(9), huge]) == [uid, enc.encode(9), enc.encode(0)]
        # random garbage, many times
        rng = random.Random(7)
        for n in range(200):
            frames = [rng.randbytes(rng.randint(0, 12)) for _ in range(rng.randint(1, 6))]
            frames[0] = enc.encode(1000 + n)
            reply = _ask(sock, frames)
            assert reply[0] == frames[0]
        assert _ask(sock, [enc.encode(5), enc.encode(24)]) == [
            enc.encode(5),
            enc.encode(24),
            enc.encode("OK"),
        ]
    finally:
        sock.close()
    with server.client() as c:  # and real work still goes through
        engine = Engine(c)
        engine.register()
        assert c.store(key(tokens_for(21), "s", end=512), 1000, [BLOCKS], b"")[1]
        assert hit_chunks(c, tokens_for(21), "l") == 2
        engine.close()
    assert "Traceback" not in server.log()


def test_non_integer_and_negative_block_ids(server: RunningServer) -> None:
    with server.client() as c:
        engine = Engine(c)
        engine.register()
        k = key(tokens_for(22), "s", end=512)
        assert c.call("store", k, 1000, [["x"] * 32], b"") == (b"", False)
        assert c.store(k, 1000, [[-1] * 32], b"") == (b"", False)
        assert c.store(k, 1000, [BLOCKS], b"")[1]  # a failed store left no reservation behind
        assert hit_chunks(c, tokens_for(22), "l") == 2
        engine.close()
