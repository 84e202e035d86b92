"""The lookup-hash log of a running server: one line per lookup with its chunk hashes, rotated and capped."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from lmcache.domain.hashing import TokenHasher
from tests.integration.server.conftest import Engine, free_port, hit_chunks, run_server, tokens_for
from tests.integration.telemetry.conftest import port_flags, wait_for

if TYPE_CHECKING:
    from pathlib import Path


def records(directory: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for path in sorted(directory.glob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


def test_one_line_per_lookup_with_the_chunk_hashes(tmp_path: Path) -> None:
    logs = tmp_path / "lookups"
    with run_server(*port_flags(free_port()), "--lookup-hash-log-dir", str(logs)) as srv, srv.client() as c:
        engine = Engine(c)
        engine.register()
        first, second = tokens_for(1, 700), tokens_for(2, 300)  # 701 and 301 tokens
        assert hit_chunks(c, first, "req-a") == 0
        assert hit_chunks(c, second, "req-b") == 0
        wait_for(lambda: len(records(logs)) == 2)
        engine.close()
    hasher = TokenHasher(chunk_size=256, algorithm="blake3")
    got = {r["request_id"]: r for r in records(logs)}
    for rid, tokens in (("req-a", first), ("req-b", second)):
        end = len(tokens) // 256 * 256
        expected = ["0x" + h.hex() for h in hasher.new_chain().hashes(tokens, 0, end)]
        record = got[rid]
        assert record["model_name"] == "m"
        assert record["chunk_size"] == 256
        assert record["seq_len"] == end
        assert record["chunk_hashes"] == expected
        assert isinstance(record["timestamp"], float)
    assert len(got["req-a"]["chunk_hashes"]) == 2  # type: ignore[arg-type]
    assert len(got["req-b"]["chunk_hashes"]) == 1  # type: ignore[arg-type]


def test_rotation_by_size_and_the_file_cap(tmp_path: Path) -> None:
    logs = tmp_path / "lookups"
    flags = [
        "--lookup-hash-log-dir",
        str(logs),
        "--lookup-hash-log-rotation-max-size",
        "64",  # smaller than one line: every lookup starts a new file
        "--lookup-hash-log-max-files",
        "2",
    ]
    with run_server(*port_flags(free_port()), *flags) as srv, srv.client() as c:
        engine = Engine(c)
        engine.register()
        for i in range(4):
            assert hit_chunks(c, tokens_for(i), f"req-{i}") == 0
        wait_for(lambda: [r["request_id"] for r in records(logs)] == ["req-2", "req-3"])
        engine.close()
    files = sorted(logs.glob("lookup_hashes_*.jsonl"))
    assert len(files) == 2
    assert [len(p.read_text().splitlines()) for p in files] == [1, 1]
