"""The reader: torn tails, bad lines, block boundaries, many files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spanjournal import Completed, Dispatched, Journal, JournalReadError, read_ledger
from spanjournal import reader as reader_module
from spanjournal._schema import encode
from spanjournal.reader import ReadStats, resolve_paths, scan


def dispatched(chunk: str, span: str = "") -> bytes:
    return encode(Dispatched(ts="2026-01-01T00:00:00.000000+00:00", session_id="s", chunk_id=chunk,
                             span_id=span or f"{abs(hash(chunk)) % 16**16:016x}"))


def completed(chunk: str, success: bool = True, span: str = "") -> bytes:
    return encode(Completed(ts="2026-01-01T00:00:01.000000+00:00", session_id="s", chunk_id=chunk,
                            success=success, span_id=span or f"{abs(hash(chunk)) % 16**16:016x}"))


def read_all(*paths: Path) -> tuple[list[object], ReadStats]:
    stats = ReadStats()
    events = [e for batch in scan(paths, stats) for e in batch]
    return events, stats


def test_bad_lines_in_the_middle_are_reported_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(
        dispatched("a")                                   # 1
        + b"this is not json\n"                           # 2
        + b"\n"                                           # 3
        + b"\xff\xfe\x00garbage\n"                        # 4
        + b"\xef\xbb\xbf" + dispatched("b")               # 5 BOM: repaired and read
        + b'{"event":"subagent_dispatched","chunk_id":7}\n'  # 6 wrong type
        + b"[1, 2, 3]\n"                                  # 7 not an object
        + b"{" + b"x" * 200_000 + b"\n"                   # 8 huge garbage
        + b'{"event":"subagent_dispatched"}\n'            # 9 missing chunk_id
        + dispatched("c")                                 # 10
    )
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == ["a", "b", "c"]
    by_line = {i.line: i.message for i in stats.issues}
    assert set(by_line) == {2, 3, 4, 5, 6, 7, 8, 9}
    assert "blank" in by_line[3]
    assert "not UTF-8" in by_line[4]
    assert "byte-order mark" in by_line[5]
    assert "chunk_id" in by_line[6] and "Expected `str`" in by_line[6]
    assert "chunk_id" in by_line[9]
    assert stats.bad_lines == 7  # the BOM line was repaired, not dropped
    assert all(str(i).startswith(f"{path}:{i.line}: ") for i in stats.issues)


def test_unknown_fields_and_unknown_events_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(
        b'{"v":2,"event":"subagent_dispatched","chunk_id":"a","new_field":{"x":1}}\n'
        b'{"v":2,"event":"heartbeat","at":"now"}\n'
        b'{"v":2,"event":"subagent_completed","chunk_id":"a","success":true,"more":[1]}\n'
    )
    events, stats = read_all(path)
    assert [type(e).__name__ for e in events] == ["Dispatched", "Completed"]
    assert stats.issues == []
    assert stats.unknown_events == 1


def test_unterminated_complete_last_line_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(dispatched("a") + dispatched("b").rstrip(b"\n"))
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == ["a", "b"]
    assert stats.torn_tails == 0


def test_torn_last_line_is_dropped_silently_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(dispatched("a") + b"garbage\n" + dispatched("b")[:20])
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == ["a"]
    assert stats.torn_tails == 1
    assert [i.line for i in stats.issues] == [2]  # the torn tail is not an issue ...
    assert [(t.path, t.line) for t in stats.torn] == [(str(path), 3)]  # ... but where it is, is known


def test_a_torn_tail_cut_inside_a_multibyte_character_is_torn_not_an_error(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(dispatched("a") + b'{"event":"subagent_dispatched","chunk_id":"caf\xc3')
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == ["a"]
    assert [t.line for t in stats.torn] == [2]


@pytest.mark.parametrize("block", [64, 100, 333, 4096])
def test_block_boundaries_and_long_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", block)
    path = tmp_path / "j.jsonl"
    long_task = "t" * 1000
    lines = [
        encode(Dispatched(chunk_id=f"c{i}", task_description=long_task if i % 7 == 0 else None))
        for i in range(60)
    ]
    lines.insert(30, b"garbage\n")
    path.write_bytes(b"".join(lines))
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == [f"c{i}" for i in range(60)]
    assert [(i.line, i.message.split(" ")[0]) for i in stats.issues] == [(31, "line")]


def test_a_line_longer_than_the_limit_is_skipped_without_holding_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reader_module, "BLOCK_BYTES", 256)
    monkeypatch.setattr(reader_module, "MAX_LINE_BYTES", 1024)
    path = tmp_path / "j.jsonl"
    path.write_bytes(dispatched("a") + b'{"x":"' + b"y" * 5000 + b'"}\n' + dispatched("b"))
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == ["a", "b"]
    assert [(i.line, "longer than" in i.message) for i in stats.issues] == [(2, True)]


def test_paths_directories_and_globs(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "host-b.jsonl").write_bytes(dispatched("b"))
    (tmp_path / "runs" / "host-a.jsonl").write_bytes(dispatched("a"))
    (tmp_path / "runs" / "notes.txt").write_text("ignored")
    assert [p.name for p in resolve_paths([tmp_path / "runs"])] == ["host-a.jsonl", "host-b.jsonl"]
    assert [p.name for p in resolve_paths([str(tmp_path / "runs" / "host-*.jsonl")])] == [
        "host-a.jsonl",
        "host-b.jsonl",
    ]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing.jsonl", "no such journal"),
        (lambda d: d, "holds no *.jsonl"),
        (lambda d: str(d / "*.nothing"), "no journal matches"),
    ],
)
def test_unreadable_paths_raise_one_line_errors(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(JournalReadError, match=re.escape(message)) as info:
        read_ledger(make(tmp_path))
    assert "\n" not in str(info.value)


def test_empty_journal_reads_as_nothing(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.touch()
    ledger = read_ledger(path)
    assert ledger.pending() == []
    assert len(ledger) == 0


# -- property: a journal cut at any byte ------------------------------------

chunk_ids = st.text(alphabet="abcdefghij-0123456789é", min_size=1, max_size=12)
event_specs = st.lists(
    st.tuples(st.sampled_from(["d", "ok", "fail"]), chunk_ids, st.text(max_size=40)),
    min_size=1,
    max_size=25,
)


def build(specs: list[tuple[str, str, str]]) -> list[bytes]:
    out = []
    for i, (kind, chunk, text) in enumerate(specs):
        span = f"{i:016x}"
        if kind == "d":
            out.append(encode(Dispatched(chunk_id=chunk, span_id=span, task_description=text or None)))
        else:
            out.append(encode(Completed(chunk_id=chunk, span_id=span, success=kind == "ok", error=text or None)))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=event_specs, data=st.data())
def test_a_journal_cut_at_any_byte_reads_its_complete_events(
    tmp_path_factory: pytest.TempPathFactory, specs: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    lines = build(specs)
    blob = b"".join(lines)
    cut = data.draw(st.integers(min_value=0, max_value=len(blob)), label="cut")
    path = tmp_path_factory.mktemp("cut") / "j.jsonl"
    path.write_bytes(blob[:cut])

    complete, offset = [], 0
    for line in lines:
        if offset + len(line) - 1 <= cut:  # the whole object is there (its newline may not be)
            complete.append(json.loads(line)["chunk_id"])
        offset += len(line)
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == complete
    assert stats.issues == []
    assert stats.torn_tails in (0, 1)

    more = build([("d", "after-1", ""), ("ok", "after-2", "")])
    with Journal(path, durability="none") as j:
        for line in more:
            j.append_bytes(line)
    events, stats = read_all(path)
    assert [e.chunk_id for e in events] == [*complete, "after-1", "after-2"]
    # The fragment, now terminated, is one reported bad line at most.
    assert stats.bad_lines == (1 if stats.issues else 0)


LINE_SHAPES = [b"{}", b'{"a":1}', b"", b" {}", b"{} ", b"{}{}", b"x", b"{", b"}", b"{\r}"]


EVENT_LINES = [
    dispatched("a").rstrip(b"\n"),
    completed("a").rstrip(b"\n"),
    completed("b", success=False).rstrip(b"\n") + b"\r",
    b'{"v":1,"event":"subagent_retried","chunk_id":"a"}',  # an event this reader does not know
    dispatched("c").rstrip(b"\n") + dispatched("d").rstrip(b"\n"),  # two events on one line
]


@given(
    st.lists(
        st.sampled_from([*LINE_SHAPES, *EVENT_LINES, b'{"event":"x"}{"event":"y"}', b'{"a":[', b'{"b":1}]}']),
        max_size=12,
    )
)
def test_line_numbers_and_reports_do_not_depend_on_how_lines_are_grouped(lines: list[bytes]) -> None:
    """A block read whole and the same lines read one by one give the same events and reports."""
    from spanjournal.reader import _decode_block, _decode_lines_one_by_one

    block = b"".join(line + b"\n" for line in lines)
    if not block:
        return
    fast, slow = ReadStats(), ReadStats()
    n, events, numbers = _decode_block(block, 0, "j", fast)
    expected, expected_numbers = _decode_lines_one_by_one(block, 0, "j", slow)
    assert n == len(lines)
    assert (events, list(numbers), fast.issues, fast.events) == (expected, expected_numbers, slow.issues, slow.events)
