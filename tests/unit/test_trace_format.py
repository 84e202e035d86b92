"""The .lct format, recorder and reader: 0.5.6's byte layout, offsets in errors, rotation, drops."""

from __future__ import annotations

import hashlib
import json
import stat
import threading
from pathlib import Path

import msgspec
import pytest

from lmcache.adapters.trace.format import LEN, Header, KeyCodec, RecordOut
from lmcache.adapters.trace.reader import TraceError, open_series
from lmcache.adapters.trace.recorder import DROPPED_QUALNAME, LctTraceRecorder, part_path
from lmcache.domain.keys import ObjectKey

# Recorded by the published LMCache 0.5.6 server under `scripts/trace_interop_056.py --requests 12`;
# it answered 27 chunk hits over its 24 lookups live.
FIXTURE_056 = Path(__file__).parent.parent / "fixtures" / "lmcache056-storage.lct"

# LMCache 0.5.6's own encoder, for these values (format.encode_header / encode_record in its package).
GOLDEN_HEADER_056 = bytes.fromhex(
    "8aa474797065a6686561646572a56d61676963c4044c4d4354ae666f726d61745f76657273696f6e01a56c6576656ca773"
    "746f72616765b474726163655f736368656d615f76657273696f6e01ac745f6d6f6e6f5f7374617274cb3ff80000000000"
    "00ac745f77616c6c5f7374617274cb4004000000000000ae736d5f636f6e6669675f6a736f6ea27b7db0736d5f636f6e66"
    "69675f646967657374a26162aa6c6576656c5f6d65746181a47061727400"
)
GOLDEN_RECORD_056 = bytes.fromhex(
    "85a474797065a67265636f7264a6745f6d6f6e6fcb3fd0000000000000a6745f77616c6ccb4008000000000000a87175616c"
    "6e616d65a3712e78a46172677382a46b6579739182a55f5f745f5fa94f626a6563744b6579a17684aa6368756e6b5f686173"
    "68c4020102aa6d6f64656c5f6e616d65a16da76b765f72616e6b07af6f626a6563745f67726f75705f696400a16e02"
)


def key(i: int, salt: str = "") -> ObjectKey:
    return ObjectKey(i.to_bytes(4, "big"), "m", 7, 0, salt)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def recorder(path: Path, **kw: object) -> LctTraceRecorder:
    return LctTraceRecorder(path, config_json='{"l1": {}}', level_meta={"producer": "test"}, **kw)  # type: ignore[arg-type]


def frames(path: Path) -> list[bytes]:
    data, out, off = path.read_bytes(), [], 0
    while off < len(data):
        (n,) = LEN.unpack_from(data, off)
        out.append(data[off + 4 : off + 4 + n])
        off += 4 + n
    return out


def test_header_and_record_bytes_match_lmcache_056() -> None:
    header = Header(b"LMCT", 1, "storage", 1, 1.5, 2.5, "{}", "ab", {"part": 0})
    assert msgspec.msgpack.encode(header) == GOLDEN_HEADER_056
    args = KeyCodec().value({"keys": [ObjectKey(b"\x01\x02", "m", 7)], "n": 2})
    assert msgspec.msgpack.encode(RecordOut(0.25, 3.0, "q.x", args)) == GOLDEN_RECORD_056


def test_a_salted_key_carries_its_salt_and_stays_readable_as_056() -> None:
    wrapped = msgspec.msgpack.decode(KeyCodec().value(key(1, "tenant")))
    assert wrapped == {
        "__t__": "ObjectKey",
        "v": {
            "chunk_hash": b"\0\0\0\1",
            "model_name": "m",
            "kv_rank": 7,
            "object_group_id": 0,
            "cache_salt": "tenant",
        },
    }


def test_recorder_writes_header_then_records_in_order(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    rec = recorder(path, flush_interval_s=0.01)
    rec.start()
    for i in range(5):
        rec.record("q.reserve", {"keys": [key(i)], "sizes": 4096})
    rec.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (trace,) = open_series([path])
    h = trace.header
    assert (h.magic, h.format_version, h.level, h.trace_schema_version) == (b"LMCT", 1, "storage", 1)
    assert h.sm_config_digest == hashlib.sha256(b'{"l1": {}}').hexdigest()
    assert h.level_meta["producer"] == "test" and h.level_meta["part"] == 0 and h.level_meta["series"]
    records = [r for _, r in trace.records()]
    assert [r.qualname for r in records] == ["q.reserve"] * 5
    args = [msgspec.msgpack.decode(r.args) for r in records]
    assert [a["keys"][0]["v"]["chunk_hash"] for a in args] == [key(i).chunk_hash for i in range(5)]
    assert all(r.t_mono >= 0 for r in records) and rec.records == 5 and rec.dropped == 0


def test_recorder_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        recorder(path).start()
    assert path.read_bytes() == b"precious"


def test_full_queue_drops_and_counts_without_blocking_and_marks_the_gap(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    rec = recorder(path, queue_size=4, flush_interval_s=60)  # the writer does not drain before close
    rec.start()
    for i in range(10):
        rec.record("q.touch", {"keys": [key(i)]})
    assert rec.dropped == 6
    rec.close()
    rec.record("q.touch", {"keys": [key(99)]})  # after close: dropped, never written
    assert rec.dropped == 7
    (trace,) = open_series([path])
    names = [r.qualname for _, r in trace.records()]
    assert names == ["q.touch"] * 4 + [DROPPED_QUALNAME]
    marker = msgspec.msgpack.decode([r for _, r in trace.records()][-1].args)
    assert marker == {"count": 6}


def test_unencodable_argument_drops_one_record_only(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    rec = recorder(path)
    rec.start()
    rec.record("q.bad", {"x": object()})
    rec.record("q.good", {"n": 1})
    rec.close()
    (trace,) = open_series([path])
    assert [r.qualname for _, r in trace.records()] == ["q.good", DROPPED_QUALNAME]


def test_files_rotate_by_size_and_read_back_as_one_series(tmp_path: Path) -> None:
    base = tmp_path / "t.lct"
    rec = recorder(base, rotate_bytes=2000, flush_interval_s=0.01)
    rec.start()
    for i in range(200):
        rec.record("q.touch", {"keys": [key(i)]})
        if i % 20 == 0:
            rec._drain()  # the writer's step, so the size check runs between batches
    rec.close()
    parts = sorted(tmp_path.glob("t*.lct"))
    assert len(parts) >= 3 and part_path(base, 1).name == "t.1.lct"
    files = open_series(list(reversed(parts)))  # any order: the headers' part numbers sort them
    assert [f.part for f in files] == list(range(len(parts)))
    assert len({f.series for f in files}) == 1
    seen = [
        msgspec.msgpack.decode(r.args)["keys"][0]["v"]["chunk_hash"] for f in files for _, r in f.records()
    ]
    assert seen == [key(i).chunk_hash for i in range(200)]


def test_parts_of_two_traces_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.lct", tmp_path / "b.lct"
    for p in (a, b):
        rec = recorder(p)
        rec.start()
        rec.close()
    with pytest.raises(TraceError, match="not a later part"):
        open_series([a, b])


def _small_trace(path: Path, n: int = 3) -> list[int]:
    rec = recorder(path)
    rec.start()
    for i in range(n):
        rec.record("q.touch", {"keys": [key(i)]})
    rec.close()
    offsets, off, data = [], 0, path.read_bytes()
    while off < len(data):
        offsets.append(off)
        off += 4 + LEN.unpack_from(data, off)[0]
    return offsets  # header first


def test_a_frame_cut_short_is_reported_with_its_offset(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    offsets = _small_trace(path)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[-1] + 7])  # the last record: its length and 3 bytes of it
    (trace,) = open_series([path])
    with pytest.raises(TraceError) as err:
        list(trace.records())
    assert err.value.offset == offsets[-1]
    frame_len = len(data) - offsets[-1] - 4
    assert f"truncated frame: 3 of {frame_len} bytes at byte offset {offsets[-1]}" in str(err.value)
    (trace,) = open_series([path])
    assert len(list(trace.records(allow_truncated=True))) == 2
    assert "ignored" in trace.warnings[0]


def test_a_cut_length_prefix_and_a_corrupt_frame_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    offsets = _small_trace(path)
    data = path.read_bytes()
    path.write_bytes(data[: offsets[-1] + 2])
    (trace,) = open_series([path])
    with pytest.raises(TraceError, match=f"2 of 4 length bytes at byte offset {offsets[-1]}"):
        list(trace.records())
    corrupt = bytearray(data)
    corrupt[offsets[2] + 4] = 0xC1  # msgpack's never-used byte
    path.write_bytes(bytes(corrupt))
    (trace,) = open_series([path])
    with pytest.raises(TraceError, match=f"corrupt record frame .* at byte offset {offsets[2]}"):
        list(trace.records())
    huge = bytearray(data)
    LEN.pack_into(huge, offsets[1], 2**31)
    path.write_bytes(bytes(huge))
    (trace,) = open_series([path])
    with pytest.raises(TraceError, match=f"length 2147483648 is not plausible at byte offset {offsets[1]}"):
        list(trace.records())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty file"),
        (b"\x00\x00", "truncated header"),
        (b"hello world, not a trace", "not an lmcache trace"),
    ],
)
def test_not_a_trace(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.lct"
    path.write_bytes(content)
    with pytest.raises(TraceError, match=message):
        open_series([path])


def test_bad_magic_and_version_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.lct"
    for header, message in (
        (Header(b"XXXX", 1, "storage", 1, 0.0, 0.0, "", ""), "magic"),
        (Header(b"LMCT", 2, "storage", 1, 0.0, 0.0, "", ""), "format_version 2"),
        (Header(b"LMCT", 1, "storage", 9, 0.0, 0.0, "", ""), "trace_schema_version 9"),
    ):
        body = msgspec.msgpack.encode(header)
        path.write_bytes(LEN.pack(len(body)) + body)
        with pytest.raises(TraceError, match=message):
            open_series([path])


def test_reads_a_trace_recorded_by_lmcache_056() -> None:
    (trace,) = open_series([FIXTURE_056])
    assert trace.header.level == "storage" and "producer" not in trace.header.level_meta
    config = json.loads(trace.header.sm_config_json)
    assert config["l1_manager_config"]["memory_config"]["size_in_bytes"] == 107374182  # 0.1 GB
    names = {r.qualname.rsplit(".", 1)[-1] for _, r in trace.records()}
    assert names == {"submit_prefetch_task", "reserve_write", "finish_write", "finish_read_prefetched"}


def test_record_is_safe_from_many_threads(tmp_path: Path) -> None:
    path = tmp_path / "t.lct"
    rec = recorder(path, flush_interval_s=0.005)
    rec.start()

    def work(t: int) -> None:
        for i in range(500):
            rec.record("q.touch", {"keys": [key(t * 1000 + i)]})

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    rec.close()
    (trace,) = open_series([path])
    assert sum(1 for _ in trace.records()) == 2000 == rec.records
