"""The cb_* ops over a real `lmcache server --engine-type blend` (cacheblend.md §2-3), byte for byte.

Reproduces the live V5 table of §3.6 with our own client, the reply bytes LMCache 0.5.6 sends, the
registration rules of `cb_register_rope`, and the start-up rules of §6.
"""

from __future__ import annotations

import subprocess
import sys

import httpx
import msgspec

from lmcache.adapters.transport.wire_types import encode_descriptor
from tests.integration.server.blend_rig import (
    CS,
    H1,
    H2,
    V5_QUERIES,
    BlendEngine,
    RawDealer,
    S,
    bkey,
)
from tests.integration.server.conftest import run_server

BLEND = ("--engine-type", "blend", "--chunk-size", str(CS))
_enc = msgspec.msgpack.Encoder()


def test_v5_table_with_our_client() -> None:
    with run_server(*BLEND) as srv, srv.client() as c:
        engine = BlendEngine(c, zeros=True)
        engine.register()
        assert c.store(bkey(S, "s", worker=0), 1000, [[1, 2, 3]], b"stub_ipc_handle") == (
            b"stub_ipc_handle",
            True,
        )
        c.end_session("s")
        for n, (query, prefix, expected) in enumerate(V5_QUERIES):
            result, calls = engine.blend.cb_unified_lookup(bkey(query, f"q{n}"))
            assert calls == 1  # everything is in L1: the first call answers
            assert result.prefix_coverage_tokens == prefix
            got = [(m.old_st, m.cur_st, m.hash.hex()) for m in result.non_prefix_segments]
            assert got == expected
            assert all(
                m.old_ed == m.old_st + CS and m.cur_ed == m.cur_st + CS for m in result.non_prefix_segments
            )
            assert result.segmented_prefix_segments == []
        engine.close()


def test_reply_bytes_match_lmcache() -> None:
    with run_server(*BLEND) as srv, srv.client() as c:
        engine = BlendEngine(c, zeros=True)
        engine.register()
        c.store(bkey(S, "s", worker=0), 1000, [[1, 2, 3]], b"stub_ipc_handle")
        raw = RawDealer(srv.url)
        try:
            assert raw.ask(b"\x00", b"\x21", b"\x01") == [b"\x00", b"\x21", bytes.fromhex("9201c3")]
            assert raw.ask(b"\x00", b"\x21", b"\x02")[2] == bytes.fromhex("9201c2")
            assert raw.call("cb_protocol_handshake", 1)[2] == bytes.fromhex("9201c3")
            reply = raw.call(28, bkey(V5_QUERIES[0][0], "raw"), 1)
            match = [
                {"old_st": 16, "old_ed": 32, "cur_st": 5, "cur_ed": 21, "hash": bytes.fromhex(H1)},
                {"old_st": 32, "old_ed": 48, "cur_st": 21, "cur_ed": 37, "hash": bytes.fromhex(H2)},
            ]
            expected = {
                "prefix_coverage_tokens": 0,
                "non_prefix_segments": match,
                "segmented_prefix_segments": [],
            }
            assert reply[2] == _enc.encode(expected)
            assert reply[2].startswith(bytes.fromhex("83b6") + b"prefix_coverage_tokens" + b"\x00\xb3")
            rope = [1000, [encode_descriptor(engine.cache.descriptor)], 8, True, [], [], [], ""]
            assert raw.call(25, *rope) == [b"\x01", b"\x19"]  # None: two frames
            ok = raw.call(
                27, bkey(V5_QUERIES[0][0], "raw", worker=0), match, [[10, 11, 12]], 1000, b"stub_ipc_handle"
            )
            assert ok[2] == bytes.fromhex("92c40f737475625f6970635f68616e646c65c3")
            assert raw.call(26, 1000) == [b"\x01", b"\x1a"]
            assert raw.call("cb_reorder_plan", bkey(S, "x"), 0, 10)[2] == b"\x90"
        finally:
            raw.close()
            engine.close()


def test_without_engine_type_blend_every_cb_op_answers_uid_op() -> None:
    with run_server("--chunk-size", str(CS)) as srv:
        raw = RawDealer(srv.url)
        try:
            assert raw.ask(b"\x00", b"\x21", b"\x01") == [b"\x00", b"\x21"]
            for op, payloads in (
                (25, [1, [], 8, True, [], [], [], ""]),
                (26, [1]),
                (27, [bkey(S, "r", worker=0), [], [[1]], 1, b""]),
                (28, [bkey(S, "r"), 1]),
                ("cb_reorder_plan", [bkey(S, "r"), 0, 0]),
            ):
                reply = raw.call(op, *payloads)
                assert reply == [b"\x01", _enc.encode(op)]
        finally:
            raw.close()


def test_register_rope_rules() -> None:
    with run_server(*BLEND) as srv, srv.client() as c:
        engine = BlendEngine(c)
        status = lambda: httpx.get(f"{srv.http_url}/status").json()  # noqa: E731
        engine.register_rope()  # before register_kv_cache: refused
        assert status()["registered_cb_rope_instances"] == []
        engine.register()
        raw = RawDealer(srv.url)
        try:
            six = [1000, [encode_descriptor(engine.cache.descriptor)], 8, True, [], []]
            assert raw.call(25, *six) == [b"\x01", b"\x19"]  # the V3 client's 6 frames
            doc = status()
            assert doc["registered_cb_rope_instances"] == [1000]
            assert doc["cb_rope_meta"] == {"1000": ["m", 1]}
            assert doc["cb_rope_geometry"]["1000"]["caches"] == [
                {"max_position": 128, "rot_dim": 8, "dtype": "float16", "mscale": 1.0}
            ]
            assert doc["active_cb_lookups"] == 0
            assert raw.call(25, *six, [], "int4") == [b"\x01", b"\x19"]  # refused: answered, logged
            assert raw.call(25, 1000, [], 8, True, [3], [], [], "") == [b"\x01", b"\x19"]
            assert raw.call(25, *six[:5]) == [b"\x01", b"\x19"]  # 5 frames: undecodable, still answered
            assert status()["registered_cb_rope_instances"] == [1000]  # the good one stays
            c.unregister_kv_cache(1000)  # unregistering the KV cache drops the rope state too
            assert status()["registered_cb_rope_instances"] == []
        finally:
            raw.close()
            engine.close()
    log = srv.log()
    assert "cb_register_rope of instance 1000 failed: instance 1000 has no lmcache-driven KV" in log
    assert "kv_quant 'int4'" in log and "group_to_cache values [3]" in log


def test_blend_with_engine_driven_is_a_start_up_error_and_blend_legacy_warns() -> None:
    cmd = [
        sys.executable,
        "-m",
        "lmcache.app.cli",
        "server",
        "--engine-type",
        "blend",
        "--supported-transfer-mode",
    ]
    done = subprocess.run([*cmd, "engine_driven"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--engine-type blend" in done.stderr and "--supported-transfer-mode" in done.stderr
    with run_server("--engine-type", "blend_legacy", "--chunk-size", str(CS)) as srv, srv.client() as c:
        engine = BlendEngine(c)
        assert engine.blend.cb_protocol_handshake(1) == (1, True)
        engine.close()
    assert "blend_legacy: the legacy CacheBlend protocol is not implemented" in srv.log()
