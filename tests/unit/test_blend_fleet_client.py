"""The CacheBlend fleet client's pure parts: token encoding, reply parsing, bounds and failure modes."""

from __future__ import annotations

import base64
import struct

import pytest

from lmcache.adapters.coordinator.blend_client import FleetBlendClient, _parse_matches, encode_tokens
from lmcache.domain.blend_types import BlendScope
from lmcache.ports.blend import FleetMatch


def test_tokens_travel_as_little_endian_uint32() -> None:
    assert base64.b64decode(encode_tokens([1, 2, 70000])) == struct.pack("<3I", 1, 2, 70000)


def test_reply_parsing_skips_malformed_entries_and_bounds_the_count() -> None:
    reply = {
        "matches": [
            {"object_key": "aa" * 32, "old_st": 16, "cur_st": 5},
            {"chunk_hash": "bb" * 32, "old_st": 0, "cur_st": 9},  # the 0.5.6 field name
            {"object_key": "zz", "old_st": 0, "cur_st": 1},
            {"object_key": "cc", "old_st": "0", "cur_st": 1},
            "junk",
        ]
    }
    assert _parse_matches(reply, 100) == [
        FleetMatch(bytes.fromhex("aa" * 32), 16, 5),
        FleetMatch(bytes.fromhex("bb" * 32), 0, 9),
    ]
    assert len(_parse_matches(reply, 1)) == 1
    with pytest.raises(ValueError, match="matches"):
        _parse_matches({"oops": []}, 10)


def test_a_client_that_is_not_running_fails_matches_and_drops_nothing_silently() -> None:
    client = FleetBlendClient("http://127.0.0.1:9", timeout_s=0.5, concurrency=1, max_pending=2)
    future = client.match(BlendScope("m", 1, ""), [1, 2, 3])
    with pytest.raises(RuntimeError, match="not running"):
        future.result(0)
    for base in range(3):
        client.publish(BlendScope("m", 1, "s"), [1, 2, 3, 4], [b"\x01"], base)
    assert client.publish_dropped == 1  # the bounded queue dropped the oldest and counted it
    with pytest.raises(ValueError, match="timeout_s"):
        FleetBlendClient("http://x", timeout_s=0)
