"""``follow()``: a ledger kept up to date in memory, folding only what was appended."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from spanjournal import ChunkState
from spanjournal import ledger as ledger_module
from spanjournal._schema import Completed, Dispatched, encode
from spanjournal.ledger import follow

DEAD = {"host": "elsewhere", "pid": 1, "proc_start": 1}


def d(chunk: str, span: str) -> bytes:
    return encode(Dispatched(chunk_id=chunk, span_id=span, **DEAD))  # type: ignore[arg-type]


def c(chunk: str, span: str, ok: bool) -> bytes:
    return encode(Completed(chunk_id=chunk, span_id=span, success=ok))


def append(path: Path, *lines: bytes) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(lines))


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The byte offset each scan of a journal started from."""
    started: list[int] = []
    real = ledger_module.FileScan

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        started.append(kwargs.get("offset", 0))
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger_module, "FileScan", spy)
    return started


def test_a_path_that_does_not_exist_yet_is_empty_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    live = follow(path)
    assert live.poll().pending() == []
    append(path, d("a", "a1"))
    assert live.poll().pending() == ["a"]


def test_each_poll_folds_only_what_was_appended(tmp_path: Path, scans: list[int]) -> None:
    path = tmp_path / "run.jsonl"
    append(path, d("a", "a1"), d("b", "b1"))
    live = follow(path)
    assert live.poll().pending() == ["a", "b"]
    size = path.stat().st_size
    append(path, c("a", "a1", True), d("c", "c1"))
    ledger = live.poll()
    assert ledger.pending() == ["b", "c"]
    assert ledger.state("a") is ChunkState.DONE
    assert ledger["a"].dispatch is not None and ledger["a"].dispatch.span_id == "a1"
    assert scans == [0, size]
    assert live.poll().pending() == ["b", "c"]  # nothing new: nothing folded twice
    assert scans[-1] == path.stat().st_size


def test_a_half_written_last_line_is_read_again_once_complete(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    line = c("a", "a1", False)
    append(path, d("a", "a1"), line[:10])
    live = follow(path)
    first = live.poll()
    assert first.pending() == ["a"] and first.stats.torn_tails == 1
    append(path, line[10:])
    ledger = live.poll()
    assert ledger.state("a") is ChunkState.FAILED and ledger.stats.torn_tails == 0
    assert ledger.counts()[ChunkState.FAILED] == 1


def test_a_truncated_or_replaced_journal_is_read_again_from_its_start(tmp_path: Path, scans: list[int]) -> None:
    path = tmp_path / "run.jsonl"
    append(path, d("a", "a1"), d("b", "b1"))
    live = follow(path)
    assert live.poll().pending() == ["a", "b"]
    path.write_bytes(d("x", "x1"))  # truncated, then regrown
    assert live.poll().pending() == ["x"]
    other = tmp_path / "other.jsonl"
    other.write_bytes(d("y", "y1") + d("z", "z1"))
    os.replace(other, path)  # replaced by another file
    assert live.poll().pending() == ["y", "z"]
    assert scans == [0, 0, 0]


def test_several_journals_and_expect(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append(a, d("x", "x1"))
    live = follow(a, b, expect=["x", "y", "w"])
    assert live.poll().pending() == ["x", "y", "w"]
    append(b, c("x", "x1", True), d("y", "y1"))
    assert live.poll().pending() == ["y", "w"]
    append(a, d("w", "w1"))
    ledger = live.poll()
    assert ledger.pending() == ["w", "y"]  # file order: a.jsonl, then b.jsonl
    assert ledger.state("w") is ChunkState.UNFINISHED
