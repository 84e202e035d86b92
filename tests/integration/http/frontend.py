"""Helpers for the HTTP frontend tests: a running server with a registered fake engine and a client."""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import torch

from tests.integration.server.conftest import Engine, hit_chunks, key, run_server, tokens_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from lmcache.adapters.transport.client import LMCacheClient
    from tests.integration.server.conftest import RunningServer

BLOCKS = list(range(8, 40))  # 512 tokens = 2 chunks = 32 blocks of 16
BLOCKS_PER_CHUNK = 16


@dataclass
class Frontend:
    """A server, an HTTP client on its frontend, and a ZMQ client with a registered fake engine."""

    server: RunningServer
    http: httpx.Client
    zmq: LMCacheClient
    engine: Engine

    def store(self, seq: int, blocks: list[int] = BLOCKS, salt: str = "") -> list[int]:
        """Store the bench's tokens for `seq` (2 chunks) from `blocks`; returns the tokens."""
        tokens = tokens_for(seq)
        rid = f"store-{seq}-{salt}"
        assert self.zmq.store(key(tokens, rid, end=512, salt=salt), self.engine.instance_id, [blocks], b"")[1]
        self.zmq.end_session(rid)
        return tokens

    def hits(self, tokens: list[int], rid: str, salt: str = "") -> int:
        """Lookup + poll; the hit in chunks."""
        hit = hit_chunks(self.zmq, tokens, rid, salt)
        self.zmq.end_session(rid)
        return hit


@contextlib.contextmanager
def frontend(*flags: str) -> Iterator[Frontend]:
    """A running server (extra `flags`) with a registered engine (instance 1000) and clients on it."""
    with (
        run_server(*flags) as server,
        httpx.Client(base_url=server.http_url, timeout=10) as http,
        server.client() as zmq,
    ):
        engine = Engine(zmq)
        engine.register()
        try:
            yield Frontend(server, http, zmq, engine)
        finally:
            engine.close()


def md5_per_chunk(layers: list[torch.Tensor], blocks: list[int], per_chunk: int) -> list[str]:
    """Reference digests of wire-protocol.md §7.1: MD5 per chunk of `layer[:, blocks]`, layer by layer."""
    index = torch.tensor(blocks)
    out = []
    for start in range(0, len(blocks), per_chunk):
        digest = hashlib.md5(usedforsecurity=False)
        for layer in layers:
            digest.update(layer[:, index[start : start + per_chunk]].contiguous().numpy().tobytes())
        out.append(digest.hexdigest())
    return out


def detail(response: httpx.Response) -> str:
    """The `detail` of an error answer (asserting the body has one)."""
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("detail"), str), body
    return body["detail"]


def wait_for(probe: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll until `probe()` holds."""
    deadline = time.monotonic() + timeout_s
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
