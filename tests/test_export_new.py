"""``spanjournal export --new``: only what an earlier export of the same journal to the same endpoint did not send.

Real processes (the installed console scripts), real files, a real OTLP collector (rotel-agent) where
spans must arrive, a closed port where they must not, and the record beside the journal."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from cli_journals import (
    BIN,
    assert_clean_exit,
    completed,
    dispatched,
    failed,
    span_of,
    trace_of,
    write_journal,
)
from spanjournal._schema import encode
from spanjournal.export import ExportError, Outcome, export_journal
from spanjournal.exported import SUFFIX, SentRecord, span_key
from spanjournal.reader import NotAJournalError, is_journal

try:
    from otlp_collector import ReceivedSpan, RotelCollector, needs_rotel
except ModuleNotFoundError:  # tests/ imported as a package (importlib import mode)
    from tests.otlp_collector import ReceivedSpan, RotelCollector, needs_rotel


#: A grpc endpoint nothing is meant to answer on (see ``closed_port``).
GRPC = "grpc"


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    return env


def export(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "spanjournal"), "export", *map(str, args), "--timeout", "5"],
        capture_output=True,
        text=True,
        env=env_for(tmp_path),
        timeout=60,
    )


def append(path: Path, *events: Any) -> None:
    with open(path, "ab") as f:
        for e in events:
            f.write(encode(e))


def first_run(path: Path) -> Path:
    """Two done chunks, one failed, one unfinished (its process died)."""
    return write_journal(
        path,
        [
            dispatched("a"),
            completed("a"),
            dispatched("b"),
            failed("b"),
            dispatched("c"),
            dispatched("d"),
            completed("d"),
        ],
    )


def grow(path: Path) -> None:
    """What a resumed run appends: ``c`` completes, ``b`` is retried and done, ``e`` is new and unfinished."""
    append(path, completed("c"), dispatched("b", 2), completed("b", attempt=2), dispatched("e"))


def dry_run_lines(tmp_path: Path, *args: str | Path) -> tuple[list[str], str]:
    """(span id, outcome) of each line ``--dry-run`` prints, and its summary line."""
    result = export(tmp_path, *args, "--dry-run")
    assert_clean_exit(result, 0)
    lines = [f"{line.split()[0]} {line.split('span=')[1].split()[0]}" for line in result.stdout.splitlines()]
    return sorted(lines), result.stderr.strip().splitlines()[-1]


def received(spans: list[ReceivedSpan]) -> list[str]:
    kinds = {"OK": "done", "ERROR": "failed"}
    out = []
    for s in spans:
        kind = "unfinished" if s.attributes.get("spanjournal.unfinished") else kinds.get(s.status_code, s.status_code)
        out.append(f"{kind} {s.span_id}")
    return sorted(out)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.fixture
def collector() -> Iterator[RotelCollector]:
    # (every test that asks for it is marked needs_rotel)
    with RotelCollector() as c:
        yield c


# -- through a real collector ---------------------------------------------------------------------


@needs_rotel
@pytest.mark.integration
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_new_sends_only_the_spans_that_are_new_or_whose_outcome_changed(
    tmp_path: Path, collector: RotelCollector, protocol: str
) -> None:
    j = first_run(tmp_path / "run.jsonl")
    endpoint = collector.grpc_endpoint if protocol == GRPC else collector.http_endpoint
    target = ("--endpoint", endpoint, "--protocol", protocol)
    first = export(tmp_path, j, *target)
    assert_clean_exit(first, 0)
    assert "left out" not in first.stderr  # without --new nothing is left out, and it says nothing of it
    collector.wait_for_spans(4, timeout=10)
    assert (tmp_path / f".run.jsonl{SUFFIX}").is_file()

    grow(j)
    second = export(tmp_path, j, *target, "--new")
    assert_clean_exit(second, 0)
    # c: was unfinished, now done (sent again); b's retry and e: new. a, b's failure, d: sent before.
    assert second.stderr.splitlines()[-1].startswith("sent 3 spans (2 done, 1 unfinished) to ")
    assert second.stderr.splitlines()[-1].endswith("; 3 spans left out as sent before")
    spans = collector.wait_for_spans(7, timeout=10)
    assert received(spans[4:]) == sorted(
        [f"done {span_of('c')}", f"done {span_of('b', 2)}", f"unfinished {span_of('e')}"]
    )
    assert received(spans[:4]) == sorted(
        [f"done {span_of('a')}", f"failed {span_of('b')}", f"unfinished {span_of('c')}", f"done {span_of('d')}"]
    )

    third = export(tmp_path, j, *target, "--new")
    assert_clean_exit(third, 0)
    assert third.stderr.splitlines()[-1].startswith("sent 0 spans to ")
    assert third.stderr.splitlines()[-1].endswith("; 6 spans left out as sent before")
    # The dry run agrees, and a plain export still sends everything.
    lines, head = dry_run_lines(tmp_path, j, *target, "--new")
    assert lines == []
    assert head.startswith("would send 0 spans to ")
    assert head.endswith("; 6 spans left out as sent before; nothing sent")
    assert len(dry_run_lines(tmp_path, j, *target)[0]) == 6


@needs_rotel
@pytest.mark.integration
def test_the_record_is_kept_per_endpoint(tmp_path: Path, collector: RotelCollector) -> None:
    j = first_run(tmp_path / "run.jsonl")
    assert_clean_exit(export(tmp_path, j, "--endpoint", collector.grpc_endpoint), 0)
    sent_there, head = dry_run_lines(tmp_path, j, "--endpoint", collector.grpc_endpoint, "--new")
    assert sent_there == [] and "4 spans left out as sent before" in head
    elsewhere, head = dry_run_lines(tmp_path, j, "--endpoint", collector.http_endpoint, "--new")
    assert len(elsewhere) == 4 and "; 0 spans left out as sent before" in head


@needs_rotel
@pytest.mark.integration
def test_a_replaced_truncated_or_rewritten_journal_is_sent_whole_and_said_so(
    tmp_path: Path, collector: RotelCollector
) -> None:
    j = first_run(tmp_path / "run.jsonl")
    target = ("--endpoint", collector.grpc_endpoint)
    original = j.read_bytes()

    def exported_then(change: str) -> subprocess.CompletedProcess[str]:
        j.write_bytes(original)
        assert_clean_exit(export(tmp_path, j, *target), 0)
        assert dry_run_lines(tmp_path, j, *target, "--new")[0] == []
        if change == "replaced":  # another file renamed over it, the same bytes and more
            other = tmp_path / "other.jsonl"
            other.write_bytes(original)
            append(other, dispatched("z"))
            os.replace(other, j)
        elif change == "truncated":
            with open(j, "r+b") as f:
                f.truncate(len(original) - 10)
        else:  # the same size, other bytes, in place
            with open(j, "r+b") as f:
                f.write(original.replace(b'"a"', b'"x"'))
        result = export(tmp_path, j, *target, "--new", "--dry-run")
        assert_clean_exit(result, 0)
        return result

    changes = [("replaced", "replaced by another file"), ("truncated", "truncated"), ("rewritten", "rewritten")]
    for change, why in changes:
        result = exported_then(change)
        assert f"warning: {j}: {why} since it was exported to {collector.grpc_endpoint}: sending all" in result.stderr
        assert "; 0 spans left out as sent before" in result.stderr
        assert len(result.stdout.splitlines()) >= 3


# -- a backend that does not accept ---------------------------------------------------------------


@pytest.mark.integration
def test_a_failing_endpoint_records_nothing(tmp_path: Path) -> None:
    j = first_run(tmp_path / "run.jsonl")
    endpoint = f"http://127.0.0.1:{closed_port()}"
    result = export(tmp_path, j, "--endpoint", endpoint, "--protocol", "http/protobuf", "--new")
    assert_clean_exit(result, 1)
    assert "nothing sent" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]
    assert not (tmp_path / "cache").exists()
    lines, head = dry_run_lines(tmp_path, j, "--endpoint", endpoint, "--new")
    assert len(lines) == 4 and head.endswith("; 0 spans left out as sent before; nothing sent")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]


class FailsFrom(SpanExporter):
    """Accepts the first ``good`` batches, refuses the rest; keeps the span ids it accepted."""

    def __init__(self, good: int) -> None:
        self.good = good
        self.calls = 0
        self.accepted: list[int] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.calls += 1
        if self.calls > self.good:
            return SpanExportResult.FAILURE
        self.accepted.extend(s.context.span_id for s in spans if isinstance(s, ReadableSpan))
        return SpanExportResult.SUCCESS


def many_pairs(path: Path, n: int) -> Path:
    return write_journal(path, [e for i in range(n) for e in (dispatched(f"c{i}"), completed(f"c{i}"))])


def test_a_partial_export_records_only_the_batches_the_backend_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    j = many_pairs(tmp_path / "run.jsonl", 10)
    record = SentRecord.open([j], "http://backend:4317")
    exporter = FailsFrom(good=2)
    with pytest.raises(ExportError):
        export_journal([j], exporter, batch_size=3, record=record, new_only=True)
    record.save()
    assert len(exporter.accepted) == 6

    again = SentRecord.open([j], "http://backend:4317")
    assert again.before == 6
    for i in range(10):
        span = int(span_of(f"c{i}"), 16)
        key = span_key(int(trace_of(f"c{i}"), 16), span, Outcome.DONE.value)
        assert again.was_sent(str(j), key) == (span in exporter.accepted)
        assert not again.was_sent(str(j), span_key(int(trace_of(f"c{i}"), 16), span, Outcome.FAILED.value))

    rest = FailsFrom(good=100)
    stats = export_journal([j], rest, batch_size=3, record=again, new_only=True)
    again.save()
    assert (stats.sent, stats.sent_before) == (4, 6)
    assert sorted(exporter.accepted + rest.accepted) == sorted(int(span_of(f"c{i}"), 16) for i in range(10))
    assert SentRecord.open([j], "http://backend:4317").before == 10


def test_only_an_export_that_sent_everything_moves_the_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    j = many_pairs(tmp_path / "run.jsonl", 4)
    first = j.stat().st_size

    def export_with(exporter: SpanExporter, **kwargs: Any) -> int | None:
        record = SentRecord.open([j], "u")
        with contextlib.suppress(ExportError):
            export_journal([j], exporter, batch_size=2, record=record, new_only=True, **kwargs)
        record.save()
        mark = SentRecord.open([j], "u").mark(str(j))
        return None if mark is None else mark[0]

    assert export_with(FailsFrom(good=1)) is None  # half of it sent: recorded, no mark
    assert export_with(FailsFrom(good=9)) == first
    append(j, dispatched("c9"), completed("c9"), dispatched("c8"), completed("c8"), dispatched("c7"))
    assert export_with(FailsFrom(good=0)) == first  # refused: the mark stays where it was
    assert export_with(FailsFrom(good=1)) == first  # c9 and c8 sent, c7 refused
    assert export_with(FailsFrom(good=1)) == j.stat().st_size  # c7
    assert SentRecord.open([j], "u").before == 7


def test_a_record_from_another_export_meanwhile_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    j = write_journal(
        tmp_path / "run.jsonl",
        [e for c in ("c0", "c2") for e in (dispatched(c), completed(c))]
        + [e for c in ("c1", "c3") for e in (dispatched(c), failed(c))],
    )
    one, two = SentRecord.open([j], "u"), SentRecord.open([j], "u")
    stats = export_journal([j], FailsFrom(good=5), record=one, new_only=True, only="failed")
    assert stats.sent == 2
    one.save()
    # ``two`` read the record before ``one`` saved it: it sends c0, then fails.
    with pytest.raises(ExportError):
        export_journal([j], FailsFrom(good=1), batch_size=1, record=two, new_only=True)
    two.save()
    merged = SentRecord.open([j], "u")
    assert merged.before == 3
    sent = {
        c: merged.was_sent(str(j), span_key(int(trace_of(c), 16), int(span_of(c), 16), outcome))
        for c, outcome in [("c0", "done"), ("c1", "failed"), ("c2", "done"), ("c3", "failed")]
    }
    assert sent == {"c0": True, "c1": True, "c2": False, "c3": True}


# -- the record is no journal ---------------------------------------------------------------------


@needs_rotel
@pytest.mark.integration
def test_a_directory_read_never_takes_the_record_for_a_journal(tmp_path: Path, collector: RotelCollector) -> None:
    runs = tmp_path / "runs"
    j = first_run(runs / "run.jsonl")
    before = subprocess.run(
        [str(BIN / "pending"), str(runs), "--json"], capture_output=True, text=True, env=env_for(tmp_path), timeout=60
    )
    assert_clean_exit(before, 0)
    assert_clean_exit(export(tmp_path, runs, "--endpoint", collector.grpc_endpoint), 0)
    assert (runs / f".run.jsonl{SUFFIX}").is_file()
    after = subprocess.run(
        [str(BIN / "pending"), str(runs), "--json"], capture_output=True, text=True, env=env_for(tmp_path), timeout=60
    )
    assert_clean_exit(after, 0)
    assert (after.stdout, after.stderr) == (before.stdout, before.stderr)
    # Neither does export itself, nor --new over the directory.
    lines, head = dry_run_lines(tmp_path, runs, "--endpoint", collector.grpc_endpoint, "--new")
    assert lines == [] and "4 spans left out as sent before" in head
    assert j.is_file()


@needs_rotel
@pytest.mark.integration
def test_a_read_only_journal_folder_keeps_the_record_in_the_cache_directory(
    tmp_path: Path, collector: RotelCollector
) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    runs = tmp_path / "runs"
    j = first_run(runs / "run.jsonl")
    runs.chmod(0o555)
    try:
        results = [
            subprocess.run(
                [*prefix, str(BIN / "spanjournal"), "export", str(j), "--endpoint", collector.grpc_endpoint, *new],
                capture_output=True,
                text=True,
                env=env_for(tmp_path),
                timeout=60,
            )
            for new in ([], ["--new"])
        ]
    finally:
        runs.chmod(0o755)
    for result in results:
        assert_clean_exit(result, 0)
    assert results[1].stderr.splitlines()[-1].startswith("sent 0 spans")
    assert sorted(p.name for p in runs.iterdir()) == ["run.jsonl"]
    kept = list((tmp_path / "cache" / "spanjournal").glob(f"*{SUFFIX}"))
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o777 == 0o600


@needs_rotel
@pytest.mark.integration
def test_nowhere_to_keep_the_record_is_a_warning_and_the_spans_are_sent(
    tmp_path: Path, collector: RotelCollector
) -> None:
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: every folder is writable")
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if os.geteuid() == 0 else []
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    j = first_run(runs / "run.jsonl")
    cache.mkdir()
    for folder in (runs, cache):
        folder.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, str(BIN / "spanjournal"), "export", str(j), "--endpoint", collector.grpc_endpoint, "--new"],
            capture_output=True,
            text=True,
            env=env_for(tmp_path),
            timeout=60,
        )
    finally:
        for folder in (runs, cache):
            folder.chmod(0o755)
    assert_clean_exit(result, 0)
    assert f"warning: {j}: what was sent cannot be recorded" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("sent 4 spans")
    collector.wait_for_spans(4, timeout=10)
    assert list(cache.iterdir()) == [] and sorted(p.name for p in runs.iterdir()) == ["run.jsonl"]


def test_help_says_what_new_leaves_out(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "spanjournal"), "export", "--help"], capture_output=True, text=True, timeout=60)
    assert_clean_exit(result, 0)
    text = " ".join(result.stdout.split())
    assert "--new" in text
    assert "trace id, span id and outcome" in text
    assert "the backend then holds both" in text
    assert ".NAME.spanjournal-exported" in text


# -- the mark: a read that starts there answers as a read from the start --------------------------

EVENT_KINDS = st.sampled_from(
    ["dispatch", "dispatch", "done", "done", "fail", "reconciled", "no-ids", "bad-ts", "bad-line", "far", "bare", "svc"]
)


def event_line(kind: str, chunk: str, attempt: int, second: int, pid: int) -> bytes:
    """One journal line of ``kind`` for ``chunk``'s attempt ``attempt``, written by process ``pid``."""
    ts = f"2026-05-27T13:{second // 60 % 60:02d}:{second % 60:02d}.000000+08:00"
    if kind == "dispatch":
        return encode(dispatched(chunk, attempt, ts=ts, host="elsewhere", pid=pid, proc_start=1))
    if kind == "done":
        return encode(completed(chunk, attempt=attempt, ts=ts, pid=pid))
    if kind == "fail":
        return encode(failed(chunk, attempt, ts=ts, pid=pid))
    if kind == "reconciled":
        return encode(completed(chunk, attempt=attempt, ts=ts, reconciled=True))
    if kind == "no-ids":
        return encode(dispatched(chunk, attempt, ts=ts, span_id=None, trace_id=None))
    if kind == "bad-ts":
        return encode(dispatched(chunk, attempt, ts="yesterday"))
    if kind == "far":  # a time OTLP cannot carry
        return encode(dispatched(chunk, attempt, ts="1969-12-31T23:59:59.000000+00:00", host="elsewhere", pid=pid))
    if kind == "svc":  # a dispatch that names its service: the session's later ones take it up
        return encode(dispatched(chunk, attempt, ts=ts, service_name=f"svc-{pid}", host="elsewhere", pid=pid))
    if kind == "bare":  # a completion without span id: pairs with the chunk's latest open dispatch
        return encode(completed(chunk, attempt=attempt, ts=ts, span_id=None))
    return b'{"event": "subagent_dispatched", "chunk_id": \n'


@st.composite
def journals_that_grow(draw: st.DrawFn) -> tuple[list[bytes], int, int]:
    """Lines, where the first export stops reading (a line count) and how many bytes of the next line it sees."""
    n = draw(st.integers(1, 30))
    lines = []
    for _ in range(n):
        kind = draw(EVENT_KINDS)
        chunk = f"c{draw(st.integers(0, 5))}"
        attempt = draw(st.integers(1, 3))
        lines.append(event_line(kind, chunk, attempt, draw(st.integers(0, 59)), draw(st.sampled_from([7, 8]))))
    cut = draw(st.integers(0, n))
    torn = draw(st.integers(0, len(lines[cut]) - 1)) if cut < n else 0
    return lines, cut, torn


class Accepts(SpanExporter):
    def export(self, spans: Any) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def described(j: Path, record: SentRecord, **kwargs: Any) -> tuple[list[str], str, list[str], list[str]]:
    from spanjournal.export import ExportStats, describe_span, journal_spans, time_in_range

    stats = ExportStats()
    spans = []
    for span in journal_spans([j], stats=stats, now_ns=10**18, record=record, new_only=True, **kwargs):
        if time_in_range(span):  # as every caller does (export_journal, the dry run)
            spans.append(describe_span(span))
        else:
            stats.skip_out_of_range(span)
    read = stats.read
    counts = f"{read.events} {read.lines} {read.bad_lines} {read.unknown_events} {read.torn_tails} {read.bytes}"
    return spans, f"{stats.summary()} {stats.sent_before} {counts}", stats.warnings(), [str(i) for i in read.issues]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(journals_that_grow(), st.sampled_from(["all", "unfinished", "failed"]))
def test_a_read_from_the_mark_answers_as_a_read_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grown: tuple[list[bytes], int, int], only: str
) -> None:
    lines, cut, torn = grown
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(work / "cache"))
    monkeypatch.delenv("SPANJOURNAL_NO_CHECKPOINT", raising=False)
    j = work / "run.jsonl"
    j.write_bytes(b"".join(lines[:cut]) + (lines[cut][:torn] if cut < len(lines) else b""))
    record = SentRecord.open([j], "u")
    if is_journal(j):
        export_journal([j], Accepts(), record=record, new_only=True, only=only, now_ns=10**18)
    else:  # bad lines only so far: refused, as every command refuses a file with no journal event
        with pytest.raises(NotAJournalError):
            export_journal([j], Accepts(), record=record, new_only=True, only=only, now_ns=10**18)
    record.save()
    with open(j, "r+b") as f:  # the rest, the torn line whole
        f.seek(len(b"".join(lines[:cut])))
        f.write(b"".join(lines[cut:]))
    if not is_journal(j):
        with pytest.raises(NotAJournalError):
            described(j, SentRecord.open([j], "u"))
        return
    for selection in {only, "all"}:
        resumed = SentRecord.open([j], "u")
        marked = resumed.mark(str(j)) is not None
        from_mark = described(j, resumed, only=selection)
        monkeypatch.setenv("SPANJOURNAL_NO_CHECKPOINT", "1")
        from_start = described(j, SentRecord.open([j], "u"), only=selection)
        monkeypatch.delenv("SPANJOURNAL_NO_CHECKPOINT")
        assert from_mark == from_start, (marked, selection)
