"""Differential tests: the C states-only fold against the pure-Python read.

``read_ledger(..., detail=False)`` folds lines in C (``spanjournal._speedups``)
unless ``SPANJOURNAL_PURE_PYTHON=1``; the two ways must give the same ledger,
but for one documented difference (the C way may forget the dispatch of a done
chunk, so dispatches are compared for chunks not done only). Journals are
generated with hypothesis, mixing well-formed events with every kind of odd
line the C parser must leave to Python, and read both ways, in one process and
in two. A second oracle works line by line: whatever ``Table.feed`` folds,
msgspec must decode into an event with exactly the values folded.

The divergences found so far are kept as example tests at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

speedups = pytest.importorskip("spanjournal._speedups")

from spanjournal import _statefold  # noqa: E402
from spanjournal._process import HOST, self_identity  # noqa: E402
from spanjournal._schema import (  # noqa: E402
    COMPLETED,
    DISPATCHED,
    RUN_PLANNED,
    Completed,
    Dispatched,
    RunPlanned,
    decode_state_line,
    encode,
)
from spanjournal.ledger import ChunkState, Ledger, read_ledger  # noqa: E402

Table = speedups.Table
PURE = "SPANJOURNAL_PURE_PYTHON"
BOM = b"\xef\xbb\xbf"
ABSENT = object()  # a key left out of a generated event

# The generators are heavy and the fixtures (tmp_path, monkeypatch) are meant to be shared by all examples.
SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))

# -- reading both ways ---------------------------------------------------------------


def snapshot(ledger: Ledger) -> dict[str, Any]:
    """Everything both ways must agree on."""
    ids = ledger.chunk_ids()
    states = [ledger.state(c) for c in ids]
    not_done = {}
    for c, state in zip(ids, states):
        if state is ChunkState.DONE:
            continue  # the C way may give no dispatch for a done chunk (documented)
        chunk = ledger[c]
        d, comp = chunk.dispatch, chunk.completion
        not_done[c] = (
            None if d is None else (d.span_id, d.host, d.pid, d.proc_start),
            None if comp is None else comp.span_id,
        )
    stats = ledger.stats
    return {
        "pending": ledger.pending(),
        "pending_done": ledger.pending([ChunkState.DONE]),
        "pending_any": ledger.pending(list(ChunkState)),
        "counts": ledger.counts(),
        "chunk_ids": ids,
        "states": states,
        "attempt_counts": [chunk.attempt_count for chunk in ledger],
        "contains": [c in ledger for c in [*CHUNKS, "never-seen"]],
        "planned": list(ledger.planned),
        "len": len(ledger),
        "not_done": not_done,
        "files": stats.files,
        "bytes": stats.bytes,
        "lines": stats.lines,
        "events": stats.events,
        "bad_lines": stats.bad_lines,
        "unknown_events": stats.unknown_events,
        "torn_tails": stats.torn_tails,
        "torn": [(i.path, i.line, i.message) for i in stats.torn],
        "issues": [(i.path, i.line, i.message) for i in ledger.issues],
    }


def read(monkeypatch: pytest.MonkeyPatch, paths: list[Path], *, pure: bool, workers: int = 1) -> Any:
    """The snapshot of a states-only read, or the exception it raised (an outcome to compare too)."""
    if pure:
        monkeypatch.setenv(PURE, "1")
    else:
        monkeypatch.delenv(PURE, raising=False)
    assert _statefold.native() is not pure
    try:
        return snapshot(read_ledger(*paths, detail=False, workers=workers))
    except Exception as exc:
        return ("raised", type(exc).__name__, str(exc))


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def assert_same(monkeypatch: pytest.MonkeyPatch, *paths: Path, workers: tuple[int, ...] = (1,)) -> Any:
    """Read ``paths`` the pure way (one process) and the C way (with each of ``workers``); compare."""
    expected = read(monkeypatch, list(paths), pure=True)
    for n in workers:
        got = read(monkeypatch, list(paths), pure=False, workers=n)
        assert got == expected, f"C fold (workers={n}) differs from the pure-Python read"
    return expected


# -- generating journals ---------------------------------------------------------------

# Pools of ids: the plain ones the C table folds, and ones JSON writes with escapes (which it defers).
PLAIN_CHUNKS = ["a", "b", "chunk-3", "ünïcödé", "日本", "😀", "del\x7f", " ", ""]
ODD_CHUNKS = ['say "hi"', "back\\slash", "tab\tnl\n", "nul\x00", "\x1f"]
CHUNKS = PLAIN_CHUNKS + ODD_CHUNKS
PLAIN_SPANS = ["s1", "s2", "00f067aa0ba902b7", "x" * 40, "spän-😀"]
SPANS = [*PLAIN_SPANS, 'q"', "\\"]
HOSTS = ["h1", "hôte", HOST, "", 'h"q']
SENT = "ZQXSENTZQX"  # a marker replaced, once encoded, by raw bytes JSON cannot write
HOLE = "ZQXHOLEZQX"  # where the variants of a perturbed line differ

# Raw bytes put inside a string: invalid UTF-8, raw control characters, escapes
# (surrogates, lone or paired, included).
ODD_STRING_BYTES = [
    b"\xff", b"\x80", b"\xc0\x80", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80",
    b"\x01", b"\x1f", b"\t", b"\r", b"\x00",
    b"\\ud800", b"\\udc00", b"\\uDBFF", b"\\ud83d\\ude00", b"\\uD83D\\uDE00", b"\\ud800\\u0041", b"\\ud800x",
    b"\\u0041", b"\\u00e9", b"\\n", b"\\/", b"\\\\", b'\\"', b"\\x", b"\\u12", b"\\",
    "é".encode(), "😀".encode(), "\ufffe".encode(),
]
GARBAGE = [
    b"{", b"}", b"[]", b"null", b"{}", b"1", b'"str"', b"NaN", b'{"event":}', b'{"event" "x"}', b"{'event': 1}",
    b'{"event":"subagent_dispatched",}', b'{"event":"subagent_dispatched" , }', BOM, b"\x00", b"\xff\xfe",
]
TRAILING = [b"x", b" ,", b"}", b' {"x":1}', b" 1", b" null", b"]", b',"a":1}', b"\x00"]
# Number texts as they may stand in JSON (or not): for raw lines.
NUMBER_TEXTS = [
    "0", "-0", "7", "-7", "007", "1.0", "1e3", "1E+2", "-", "+1", "1.", ".5",
    "999999999999999999", "1000000000000000000", "-999999999999999999",
]


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn about in proportion to its weight (``one_of`` draws evenly)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(lambda s: s)


def mostly(usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], weight: int = 4) -> st.SearchStrategy[Any]:
    return weighted((weight, usual), (1, odd))


ints = weighted(
    (8, st.integers(-5, 2**22)),
    (6, st.integers(-(10**18) + 1, 10**18 - 1)),  # up to 18 digits: folded in C
    (2, st.sampled_from([0, os.getpid(), 10**18 - 1, -(10**18 - 1), 10**18, 2**63 - 1, -(2**63)])),  # 19: deferred
    (1, st.integers(min_value=2**63) | st.integers(max_value=-(2**63) - 1)),  # beyond 64 bits: read the Python way
    (1, st.sampled_from([2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**19 - 1])),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
# Values that make a long line (> 64 KiB) or one with many quotes (> 256).
BIG_VALUES = ["y" * 70_000, ["q"] * 130, {f"k{i}": i for i in range(129)}, "é" * 40_000]
INTEREST = {"event", "chunk_id", "span_id", "success", "host", "pid", "proc_start"}
extra_keys = mostly(
    st.sampled_from(["v", "ts", "session_id", "attrs", "chunk_ids", "Event", "span_id ", "x", "ключ"]),
    st.text(max_size=8),
    3,
)


def opt(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(values, st.just(ABSENT), st.none())


plain_chunks = st.sampled_from(PLAIN_CHUNKS)
chunks = mostly(plain_chunks, st.sampled_from(ODD_CHUNKS), 6)
spans = mostly(st.sampled_from(PLAIN_SPANS), st.sampled_from(SPANS), 6)
chunk_values = mostly(chunks, st.sampled_from([ABSENT, None, 5, ["a"]]), 12)
span_values = mostly(spans, st.sampled_from([ABSENT, None, "", 5]), 8)
host_values = mostly(opt(st.sampled_from(HOSTS)), st.sampled_from([5, ["h"]]), 12)
pid_values = mostly(opt(ints), st.sampled_from([1.0, 1e3, -0.0, "7", True, [1], {"a": 1}]), 12)
success_values = mostly(st.booleans(), opt(st.sampled_from([1, 0, "yes", "true"])), 12)
event_values = mostly(
    st.sampled_from([DISPATCHED, COMPLETED]),
    st.sampled_from([RUN_PLANNED, "other_event", "", "Subagent_dispatched", 5, ABSENT]),
    12,
)


@st.composite
def event_dict(draw: st.DrawFn) -> dict[str, Any]:
    """An event as a mapping: keys in any order, values of any type, unknown keys beside them."""
    fields = {
        "event": draw(event_values),
        "chunk_id": draw(chunk_values),
        "span_id": draw(span_values),
        "host": draw(host_values),
        "pid": draw(pid_values),
        "proc_start": draw(pid_values),
        "success": draw(success_values),
    }
    if fields["event"] == RUN_PLANNED:
        fields["chunk_ids"] = draw(mostly(st.lists(chunks, max_size=4), st.sampled_from(["a", [1]]), 2))
    for key in draw(st.lists(extra_keys, max_size=4)):
        if key not in INTEREST:
            fields[key] = draw(mostly(json_values, st.sampled_from(BIG_VALUES), 30))
    items = [(k, v) for k, v in fields.items() if v is not ABSENT]
    return dict(draw(st.permutations(items)))


def dumps(obj: Any, ascii_only: bool, compact: bool) -> bytes:
    text = json.dumps(obj, ensure_ascii=ascii_only, separators=(",", ":") if compact else (", ", ": "))
    return text.encode("utf-8")


@st.composite
def struct_line(draw: st.DrawFn) -> bytes:
    """A well-formed event as the writer encodes it."""
    chunk = draw(chunks)
    span = draw(mostly(spans, st.none(), 8))
    kind = draw(st.sampled_from("ddddcccp"))
    if kind == "d":
        event: Any = Dispatched(
            chunk_id=chunk,
            span_id=span,
            host=draw(st.none() | st.sampled_from(HOSTS)),
            pid=draw(st.none() | ints),
            proc_start=draw(st.none() | ints),
            task_description=draw(st.none() | st.text(max_size=10)),
            attrs=draw(st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=2)),
        )
    elif kind == "c":
        event = Completed(
            chunk_id=chunk,
            span_id=span,
            success=draw(st.booleans()),
            error=draw(st.none() | st.text(max_size=10)),
            duration_ms=draw(st.none() | st.floats(0, 1e9)),
        )
    else:
        event = RunPlanned(chunk_ids=draw(st.lists(chunks, max_size=4)))
    return encode(event)[:-1]


@st.composite
def dict_line(draw: st.DrawFn) -> bytes:
    return dumps(draw(event_dict()), draw(st.sampled_from([True, False, False, False])), draw(st.booleans()))


@st.composite
def raw_line(draw: st.DrawFn) -> bytes:
    """An event written by hand: duplicated keys, numbers as JSON has them or not, deep nesting."""
    obj = draw(event_dict())
    pairs = [(json.dumps(k), json.dumps(v)) for k, v in obj.items()]
    if pairs and draw(st.booleans()):  # a key twice
        key = draw(st.sampled_from(sorted(INTEREST | {"v", "x"})))
        value = json.dumps(draw(st.one_of(chunks, spans, json_values)))
        pairs.insert(draw(st.integers(0, len(pairs))), (json.dumps(key), value))
    if draw(st.booleans()):  # a number in any spelling, for a key the fold reads or not
        key = draw(st.sampled_from(["pid", "proc_start", "success", "span_id", "x"]))
        pairs = [p for p in pairs if p[0] != json.dumps(key)]
        pairs.append((json.dumps(key), draw(st.sampled_from(NUMBER_TEXTS))))
    if draw(st.integers(0, 3)) == 0:  # nesting around the C parser's limit (64)
        depth = draw(st.sampled_from([1, 63, 64, 65, 100]))
        open_, close = draw(st.sampled_from([("[", "]"), ('{"k":', "}")]))
        key = draw(st.sampled_from(["x", "host", "pid"]))
        pairs = [p for p in pairs if p[0] != json.dumps(key)]
        pairs.append((json.dumps(key), open_ * depth + ("1" if open_ != "[" else "") + close * depth))
    pairs = draw(st.permutations(pairs))
    return ("{" + ",".join(f"{k}:{v}" for k, v in pairs) + "}").encode("utf-8")


@st.composite
def odd_string_line(draw: st.DrawFn) -> bytes:
    """An event with raw bytes JSON cannot write (or escapes) inside one of its strings."""
    obj = draw(event_dict())
    where = draw(st.sampled_from(["chunk_id", "span_id", "host", "event", "x", "key"]))
    if where == "key":
        obj[SENT] = 1
    elif where == "event":
        obj["event"] = draw(st.sampled_from([DISPATCHED, COMPLETED])) + SENT
    else:
        obj[where] = draw(st.sampled_from(["a", "s1", ""])) + SENT
    line = dumps(obj, draw(st.booleans()), True)
    return line.replace(SENT.encode(), draw(st.sampled_from(ODD_STRING_BYTES)))


# Integers about the C parser's limits (18 digits, 64 bits).
INT64_EDGES = [
    str(n) for n in (10**18 - 1, 10**18, 2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**19 - 1, 10**19, 10**30)
] + [str(-n) for n in (10**18 - 1, 10**18, 2**63, 2**63 + 1, 10**19 - 1)]
# JSON texts (or near misses) put raw in place of a value.
RAW_VALUES = [
    *NUMBER_TEXTS, *INT64_EDGES, "-0.0", "1e2", "0.5", "NaN", "Infinity", "-Infinity",
    "true", "false", "null", "tru", "nul", "falsey", '""', '"x"', '"1"', '"\\u0041"', '"a\\"b"', '"\\/"',
    "[]", "{}", "[1]", '{"a":"b"}', '["\\""]', "[", "{", '"',
]

# Nesting about the C parser's limit (64).
DEEP_VALUES = [*("[" * d + "]" * d for d in (1, 63, 64, 65)), *('{"k":' * d + "1" + "}" * d for d in (1, 63, 64, 65))]
# Bytes put between tokens: JSON's own blanks, and others.
BLANKS = [b" ", b"\t", b"\r", b"  \t\r", b"\f", b"\v", b"\x00", b"\xc2\xa0", b"\xef\xbb\xbf", b"\x1c"]


@st.composite
def plain_pairs(draw: st.DrawFn) -> list[list[str]]:
    """The (key, value) JSON texts of an event the C table folds, in any order."""
    kind = draw(st.sampled_from([DISPATCHED, COMPLETED]))
    fields: dict[str, Any] = {"event": kind, "chunk_id": draw(plain_chunks)}
    fields["span_id"] = draw(st.sampled_from(PLAIN_SPANS))
    if kind == DISPATCHED:
        plain_ints = st.integers(-(10**18) + 1, 10**18 - 1)
        for key, values in (("host", st.sampled_from(HOSTS[:-1])), ("pid", plain_ints), ("proc_start", plain_ints)):
            value = draw(st.one_of(values, st.none(), st.just(ABSENT)))
            if value is not ABSENT:
                fields[key] = value
    else:
        fields["success"] = draw(st.booleans())
    for key in draw(st.lists(st.sampled_from(["v", "ts", "x", "attrs", "ключ"]), max_size=2, unique=True)):
        fields[key] = draw(json_values)
    pairs = [[json.dumps(k, ensure_ascii=False), json.dumps(v, ensure_ascii=False)] for k, v in fields.items()]
    return draw(st.permutations(pairs))


def join_pairs(pairs: list[list[str]], seps: list[str] | None = None) -> bytes:
    comma, colon, open_, close = seps or [",", ":", "{", "}"]
    return (open_ + comma.join(k + colon + v for k, v in pairs) + close).encode()


plain_line = plain_pairs().map(join_pairs)


@st.composite
def perturbed_lines(draw: st.DrawFn) -> list[bytes]:
    """A plain event the C table folds, with one thing changed, in each variant of that change.

    Each variant tests one reason to defer: say, one value replaced by each of
    RAW_VALUES, or each of ODD_STRING_BYTES put at one place in a string.
    """
    pairs = draw(plain_pairs())
    kind = json.loads(dict(pairs)['"event"'])
    seps = [",", ":", "{", "}"]
    changes = ["value"] * 3 + ["duplicate", "string"] * 2 + ["drop", "key", "blank", "bom", "trailing", "cut"]
    change = draw(st.sampled_from(changes))
    i = draw(st.integers(0, len(pairs) - 1))
    fills: list[bytes] = []
    if change == "value":
        read = ["host", "pid", "proc_start"] if kind == DISPATCHED else ["success"]  # the keys this kind reads
        key = draw(st.sampled_from([*read, *read, "chunk_id", "span_id", "event", "x", "pid", "success"]))
        pairs = [p for p in pairs if p[0] != json.dumps(key)]
        pairs.insert(i % (len(pairs) + 1), [json.dumps(key), HOLE])
        fills = [v.encode() for v in [*RAW_VALUES, *DEEP_VALUES]]
    elif change == "duplicate":
        key, value = pairs[i]
        pairs.insert(draw(st.integers(0, len(pairs))), [key, HOLE])
        fills = [v.encode() for v in [value, *RAW_VALUES, '"a"', '"s1"']]
    elif change == "drop":
        del pairs[i]
    elif change in ("string", "key"):  # odd bytes inside a key or a string value
        k = 0 if change == "key" else 1
        text = pairs[i][k] if pairs[i][k].startswith('"') else '"x"'
        at = draw(st.integers(1, len(text) - 1))
        pairs[i][k] = text[:at] + HOLE + text[at:]
        fills = ODD_STRING_BYTES
    elif change == "blank":
        seps[draw(st.integers(0, 3))] += HOLE
        fills = BLANKS
    line = join_pairs(pairs, seps)
    if change == "bom":
        line, fills = HOLE.encode() + line, [BOM, BOM + b" ", b" " + BOM]
    elif change == "trailing":
        line, fills = line + HOLE.encode(), TRAILING
    elif change == "cut":
        return [line[:n] for n in range(0, len(line), max(1, len(line) // 64))]
    return [line.replace(HOLE.encode(), fill) for fill in fills] if fills else [line]


perturbed_line = perturbed_lines().flatmap(st.sampled_from)


garbage_line = st.one_of(st.sampled_from(GARBAGE), st.binary(max_size=16).map(lambda b: b.replace(b"\n", b"")))
blank_line = st.sampled_from([b"", b" ", b"\t", b"\r", b" \t\r ", BOM, BOM + b" "])
base_line = weighted(
    (5, plain_line),
    (3, struct_line()),
    (2, dict_line()),
    (2, perturbed_line),
    (1, raw_line()),
    (1, odd_string_line()),
    (1, garbage_line),
    (1, blank_line),
)


@st.composite
def journal_line(draw: st.DrawFn) -> bytes:
    """One line (no newline), sometimes with a BOM, padding, a \\r, trailing garbage or cut short."""
    line = draw(base_line)
    mod = draw(st.integers(0, 14))
    if mod == 0:
        line = BOM + line
    elif mod == 1:
        line = draw(st.sampled_from([b" ", b"\t", b" \t"])) + line + draw(st.sampled_from([b" ", b"\r", b" \r", b"\t"]))
    elif mod == 2:
        line += b"\r"
    elif mod == 3:
        line += draw(st.sampled_from(TRAILING))
    elif mod == 4 and line:
        line = line[: draw(st.integers(0, len(line) - 1))]
    return line


@st.composite
def attempt(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A dispatch and a completion of one chunk, the span ids of either maybe missing (then pairing is by order)."""
    chunk = draw(plain_chunks)
    span = draw(st.sampled_from([*PLAIN_SPANS[:3], None, ""]))
    dispatch = {"event": DISPATCHED, "chunk_id": chunk, "span_id": span, "pid": draw(st.integers(0, 99))}
    completion = {"event": COMPLETED, "chunk_id": chunk, "success": draw(st.booleans())}
    completion["span_id"] = draw(st.sampled_from([span, span, None, "", "s9"]))
    return dumps(dispatch, False, True), dumps(completion, False, True)


@st.composite
def journal(draw: st.DrawFn) -> bytes:
    """Whole lines, then maybe an unterminated tail: an event that lost its newline, or one cut short."""
    lines = draw(st.lists(journal_line(), min_size=1, max_size=24))
    for dispatch, completion in draw(st.lists(attempt(), max_size=3)):
        i = draw(st.integers(0, len(lines)))
        lines.insert(i, dispatch)
        lines.insert(draw(st.integers(i + 1, len(lines))), completion)
    data = b"".join(line + b"\n" for line in lines)
    tail = draw(st.integers(0, 3))
    if tail == 1:
        data += draw(st.one_of(struct_line(), dict_line()))
    elif tail == 2:
        whole = draw(struct_line())
        data += whole[: draw(st.integers(1, len(whole) - 1))]
    elif tail == 3:
        data += draw(journal_line())
    return data


# -- the differential properties -------------------------------------------------------


@SETTINGS
@given(data=journal())
def test_one_journal_reads_the_same_both_ways(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    assert_same(monkeypatch, write(tmp_path / "j.jsonl", data))


@settings(SETTINGS, max_examples=150)
@given(data=journal())
def test_a_parallel_read_reads_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    # workers=2 forks even for a small file: the C fold runs in both processes.
    assert_same(monkeypatch, write(tmp_path / "j.jsonl", data), workers=(1, 2))


@settings(SETTINGS, max_examples=100)
@given(first=journal(), second=journal())
def test_several_journals_read_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: bytes, second: bytes
) -> None:
    # One table over all files: a completion without span id in the second pairs with a dispatch in the first.
    paths = [write(tmp_path / "a.jsonl", first), write(tmp_path / "b.jsonl", second)]
    assert_same(monkeypatch, *paths, workers=(1, 2))


def test_the_generated_journals_take_both_paths() -> None:
    """A guard for the generators: the journals hold lines the C table folds and lines it defers."""
    folded = deferred = 0

    @settings(SETTINGS, max_examples=100, database=None)
    @given(data=journal())
    def count(data: bytes) -> None:
        nonlocal folded, deferred
        table, start, end = Table(), 0, data.rfind(b"\n") + 1
        while start < end:
            start, n = table.feed(data, start, end)
            folded += n
            if start < end:
                deferred += 1
                start = data.index(b"\n", start) + 1

    count()
    assert 0.15 < folded / (folded + deferred) < 0.85, (folded, deferred)


# -- line by line: the table folds only what msgspec decodes to the same values ---------


def contents(table: Any) -> tuple[list[str], list[tuple[Any, ...]], list[str], list[str], list[tuple[str, str]]]:
    """(seen, open, done, failed_spans, failures) of a table; done and failed spans sorted.

    ``summary()`` gives all five, or, in later builds, (open, failed_spans,
    failures), the ids being asked for with ``ids(DISPATCHED)`` and ``ids(DONE)``.
    """
    summary = table.summary()
    if len(summary) == 5:
        seen, open_, done, failed_spans, failures = summary
    else:
        open_, failed_spans, failures = summary
        seen, done = table.ids(speedups.DISPATCHED), table.ids(speedups.DONE)
    return list(seen), list(open_), sorted(done), sorted(failed_spans), list(failures)


def fold_one(line: bytes) -> tuple[int, int, Table]:
    table = Table()
    stop, n = table.feed(line + b"\n", 0, len(line) + 1)
    return stop, n, table


@settings(SETTINGS, max_examples=300)
@given(
    groups=st.lists(weighted((2, perturbed_lines()), (1, journal_line().map(lambda x: [x]))), min_size=1, max_size=8),
    after=st.sampled_from([b"", b'"', b"\\", b'"}', b"\xff" * 20]),
)
def test_the_table_folds_only_what_msgspec_decodes_to_the_same(groups: list[list[bytes]], after: bytes) -> None:
    """Each line alone, amid bytes the table must not read (``after`` lies beyond ``end``)."""
    for lines in groups:
        for line in lines:
            check_fold_of_one_line(line, after)


def check_fold_of_one_line(line: bytes, after: bytes) -> None:
    table = Table()
    before = b"{}\n"
    buf = before + line + b"\n" + after
    stop, n = table.feed(buf, len(before), len(buf) - len(after))
    if n == 0:
        assert stop == len(before), "a deferred line must be where feed stops"
        return
    assert (stop, n) == (len(buf) - len(after), 1)
    assert not line.startswith(BOM) and line.strip(b" \t\r"), "a BOM or a blank line must be left to Python (reports)"
    event = decode_state_line(line)  # must not raise
    assert event.kind in (1, 2) and event.span_id, "only events with a span id are folded"
    seen, open_, done, failed_spans, failures = contents(table)
    if event.kind == 1:
        assert (seen, done, failed_spans, failures) == ([event.chunk_id], [], [], [])
        assert open_ == [(event.chunk_id, event.span_id, event.host, event.pid, event.proc_start)]
    elif event.success:
        assert (seen, open_, done, failed_spans, failures) == ([], [], [event.chunk_id], [], [])
    else:
        assert (seen, open_, done) == ([], [], [])
        assert (failed_spans, failures) == ([event.span_id], [(event.chunk_id, event.span_id)])


# -- the Table API, by example -------------------------------------------------------------

D = b'{"event":"subagent_dispatched","chunk_id":"a","span_id":"s1"'
PLAIN = D + b',"host":"h","pid":12,"proc_start":34}\n'

ODD_LINES = {
    "blank": b"",
    "whitespace only": b" \t\r",
    "byte-order mark": BOM + D + b"}",
    "bad JSON": b'{"event":',
    "not an object": b"[1]",
    "empty object": b"{}",
    "unknown event": b'{"event":"other","chunk_id":"a","span_id":"s1"}',
    "run_planned": b'{"event":"run_planned","chunk_ids":["a"]}',
    "no event": b'{"chunk_id":"a","span_id":"s1"}',
    "pid a string": D + b',"pid":"12"}',
    "pid a float": D + b',"pid":12.0}',
    "success a number": b'{"event":"subagent_completed","chunk_id":"a","span_id":"s1","success":1}',
    "no success": b'{"event":"subagent_completed","chunk_id":"a","span_id":"s1"}',
    "chunk_id twice": D + b',"chunk_id":"b"}',
    "span_id twice": D + b',"span_id":"s2"}',
    "event twice": D + b',"event":"subagent_completed","success":true}',
    "no span_id": b'{"event":"subagent_dispatched","chunk_id":"a"}',
    "null span_id": b'{"event":"subagent_dispatched","chunk_id":"a","span_id":null}',
    "empty span_id": b'{"event":"subagent_dispatched","chunk_id":"a","span_id":""}',
    "escape in chunk_id": b'{"event":"subagent_dispatched","chunk_id":"\\u0061","span_id":"s1"}',
    "escape in span_id": b'{"event":"subagent_dispatched","chunk_id":"a","span_id":"s\\n"}',
    "escape in host": D + b',"host":"h\\/"}',
    "escape in event": b'{"event":"subagent\\u005fdispatched","chunk_id":"a","span_id":"s1"}',
    "escaped key": b'{"event":"subagent_dispatched","chunk\\u005fid":"a","span_id":"s1"}',
    "invalid UTF-8 in chunk_id": b'{"event":"subagent_dispatched","chunk_id":"\xff","span_id":"s1"}',
    "UTF-8 surrogate in span_id": b'{"event":"subagent_dispatched","chunk_id":"a","span_id":"\xed\xa0\x80"}',
    "overlong UTF-8 in host": D + b',"host":"\xc0\x80"}',
    "surrogate escape in an ignored field": D + b',"x":"\\ud800"}',
    "raw control character in an ignored field": D + b',"x":"a\x01"}',
    "19-digit pid": D + b',"pid":1000000000000000000}',
    "19-digit proc_start": D + b',"proc_start":-1000000000000000000}',
    "nesting beyond 64": D + b',"x":' + b"[" * 65 + b"]" * 65 + b"}",
    "trailing garbage": D + b"} x",
    "two objects": D + b"}" + D + b"}",
    "leading zero": D + b',"pid":012}',
}


@pytest.mark.parametrize("odd", list(ODD_LINES.values()), ids=list(ODD_LINES))
def test_feed_stops_at_the_first_line_to_defer(odd: bytes) -> None:
    buf = PLAIN + PLAIN + odd + b"\n" + PLAIN
    table = Table()
    assert table.feed(buf, 0, len(buf)) == (2 * len(PLAIN), 2)
    after = 2 * len(PLAIN) + len(odd) + 1
    assert table.feed(buf, after, len(buf)) == (len(buf), 1)
    assert contents(table)[:3] == (["a"], [("a", "s1", "h", 12, 34)], [])


PLAIN_LINES = {
    "as encoded": encode(Dispatched(chunk_id="a", span_id="s1", host="h", pid=1, attrs={"k": [1, 2.5, None]}))[:-1],
    "spaces and \\r": b' \t{ "event" : "subagent_completed" , "chunk_id" : "a" , "span_id" : "s1" ,'
    b' "success" : true } \r',
    "unknown keys": D + b',"x":{"y":[1,-2.5e-3,true,null,"\\u00e9\\n"]},"z":1E400,"w":99999999999999999999}',
    "invalid UTF-8 in an unknown field (msgspec passes over it)": D + b',"x":"\xff\xc0\x80"}',
    "non-ASCII ids": '{"event":"subagent_dispatched","chunk_id":"日本😀","span_id":"spän","host":"hôte"}'.encode(),
    "nulls": D + b',"host":null,"pid":null,"proc_start":null}',
    "18-digit ints": D + b',"pid":999999999999999999,"proc_start":-999999999999999999}',
    "nesting up to 64": D + b',"x":' + b"[" * 64 + b"]" * 64 + b"}",
    "an empty chunk_id": b'{"event":"subagent_completed","chunk_id":"","span_id":"s1","success":false}',
}


@pytest.mark.parametrize("line", list(PLAIN_LINES.values()), ids=list(PLAIN_LINES))
def test_feed_folds_plain_lines(line: bytes) -> None:
    stop, n, _ = fold_one(line)
    assert (stop, n) == (len(line) + 1, 1)
    decode_state_line(line)  # and msgspec agrees it is an event


def test_feed_takes_only_whole_lines_within_its_bounds() -> None:
    buf = b"junk\n" + PLAIN + PLAIN + PLAIN[:-1]  # the last line has no newline
    table = Table()
    start = len(b"junk\n")
    assert table.feed(buf, start, len(buf)) == (start + 2 * len(PLAIN), 2)
    assert table.feed(buf, start, start + len(PLAIN) + 5) == (start + len(PLAIN), 1)
    assert table.feed(bytearray(buf), start, start) == (start, 0)
    for bad in ((-1, 5), (0, len(buf) + 1), (5, 4)):
        with pytest.raises(ValueError):
            table.feed(buf, *bad)


def test_summary_of_a_small_journal() -> None:
    lines = [
        D + b',"host":"h1","pid":7,"proc_start":8}',
        b'{"event":"subagent_dispatched","chunk_id":"b","span_id":"s2"}',
        b'{"event":"subagent_completed","chunk_id":"a","span_id":"s1","success":false}',
        b'{"event":"subagent_dispatched","chunk_id":"a","span_id":"s3","host":"h2"}',
        b'{"event":"subagent_completed","chunk_id":"b","span_id":"s2","success":true}',
        b'{"event":"subagent_completed","chunk_id":"x","span_id":"sx","success":false}',
        b'{"event":"subagent_completed","chunk_id":"a","span_id":"s4","success":false}',
        b'{"event":"subagent_dispatched","chunk_id":"c","span_id":"' + b"9" * 30 + b'","pid":-5}',
    ]
    buf = b"".join(line + b"\n" for line in lines)
    table = Table()
    assert table.feed(buf, 0, len(buf)) == (len(buf), len(lines))
    seen, open_, done, failed_spans, failures = contents(table)
    assert seen == ["a", "b", "c"]  # by first dispatch
    assert open_ == [("a", "s3", "h2", None, None), ("c", "9" * 30, None, -5, None)]  # latest dispatch, not done
    assert done == ["b"]
    assert failed_spans == ["s1", "s4", "sx"]
    assert failures == [("a", "s4"), ("x", "sx")]  # last failure, by first failure
    assert table.latest_span("a") == "s3" and table.latest_span("x") is None and table.latest_span("zz") is None
    # What Python folds for a deferred line goes through dispatch() / complete().
    table.dispatch("d", "s5", None, 1, None)
    table.complete("a", "s3", True)
    seen, open_, done, _, _ = contents(table)
    assert seen == ["a", "b", "c", "d"] and done == ["a", "b"]
    assert open_ == [("c", "9" * 30, None, -5, None), ("d", "s5", None, 1, None)]


def fold_lines(table: Any, lines: list[bytes]) -> None:
    """Fold lines as the reader does: through feed(), and the deferred ones (with span ids) decoded in Python."""
    buf = b"".join(line + b"\n" for line in lines)
    start = 0
    while start < len(buf):
        start, _ = table.feed(buf, start, len(buf))
        if start < len(buf):
            nl = buf.index(b"\n", start)
            try:
                e = decode_state_line(buf[start:nl])
            except Exception:
                e = None
            if e is not None and e.kind == 1 and e.span_id:
                with contextlib.suppress(OverflowError):  # beyond 64 bits: the reader reads such journals in Python
                    table.dispatch(e.chunk_id, e.span_id, e.host, e.pid, e.proc_start)
            elif e is not None and e.kind == 2 and e.span_id:
                table.complete(e.chunk_id, e.span_id, e.success)
            start = nl + 1


@pytest.mark.skipif(not hasattr(Table, "dump"), reason="a build without dump() and load()")
@settings(SETTINGS, max_examples=150)
@given(lines=st.lists(st.one_of(struct_line(), dict_line()), max_size=30), cut=st.integers(0, 30))
def test_a_table_loads_a_later_part_as_if_it_had_folded_it(lines: list[bytes], cut: int) -> None:
    """What a parallel read relies on: fold(a) + load(dump(fold(b))) == fold(a + b)."""
    whole, first, second = Table(), Table(), Table()
    fold_lines(whole, lines)
    fold_lines(first, lines[:cut])
    fold_lines(second, lines[cut:])
    first.load(second.dump())
    assert contents(first) == contents(whole)


def test_examples_read_the_same(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each odd line amid plain ones, and a few folds that depend on file order."""
    me = self_identity()
    alive = b'{"event":"subagent_dispatched","chunk_id":"r","span_id":"sr","host":%s,"pid":%d,"proc_start":%d}' % (
        json.dumps(me[0]).encode(), me[1], me[2] or 0,
    )
    body = b"".join(line + b"\n" for line in [*ODD_LINES.values(), *PLAIN_LINES.values(), alive])
    orders = [
        b'{"event":"subagent_dispatched","chunk_id":"p","span_id":""}\n'
        b'{"event":"subagent_completed","chunk_id":"p","success":false}\n'
        b'{"event":"subagent_completed","chunk_id":"q","success":false}\n'
        b'{"event":"subagent_dispatched","chunk_id":"q","span_id":"sq"}\n'
        b'{"event":"subagent_completed","chunk_id":"q","span_id":"s1","success":false}\n',
        b'{"event":"run_planned","chunk_ids":["z","a","y"]}\n',
    ]
    snap = assert_same(monkeypatch, write(tmp_path / "j.jsonl", body + b"".join(orders) + D[:20]), workers=(1, 2))
    assert snap["states"][snap["chunk_ids"].index("r")] is ChunkState.RUNNING
    assert snap["bad_lines"] > 10 and snap["unknown_events"] == 1 and snap["torn_tails"] == 1


# -- divergences found, kept as regression tests ------------------------------------------------


@pytest.mark.parametrize(
    "field,value", [("pid", 2**63), ("proc_start", 2**64), ("pid", -(2**63) - 1), ("proc_start", 10**30)]
)
def test_integers_beyond_int64(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field: str, value: int) -> None:
    """msgspec decodes any integer; the C table holds 64 bits (``Table.dispatch`` raised OverflowError once)."""
    line = b'{"event":"subagent_dispatched","chunk_id":"a","span_id":"s1","%s":%d}\n' % (field.encode(), value)
    snap = assert_same(monkeypatch, write(tmp_path / "j.jsonl", line), workers=(1, 2))
    assert snap["states"] == [ChunkState.UNFINISHED]


@pytest.mark.parametrize("data", [
    D + b"}" + D + b"}\n\n",  # two events on one line, then a blank line
    D + b",\n" + b'"pid":1}\n' + D + b"}" + D + b"}\n",  # one event over two lines, then two on one line
], ids=["two-on-a-line-and-a-blank", "one-over-two-lines-and-two-on-one"])
def test_lines_holding_other_than_one_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes) -> None:
    """Each line is one event: the pure way's block decode (``decode_lines``) once took these as good lines."""
    snap = assert_same(monkeypatch, write(tmp_path / "j.jsonl", data))
    assert snap["events"] == 0 and snap["bad_lines"] == snap["lines"]


def test_a_parallel_read_of_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the C fold: cutting files into parts once seeked to a negative offset (OSError) when a file's
    last line crossed the cut."""
    paths = [write(tmp_path / "a.jsonl", b"a\n"), write(tmp_path / "b.jsonl", b"")]
    assert_same(monkeypatch, *paths, workers=(2,))
