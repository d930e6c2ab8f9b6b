"""Unit tests of spanjournal.export and `spanjournal export`: how journal attempts become spans
(ids, times, status, attributes, resources), streaming, batching, the exporter set-up from
options and OTEL_* variables, --dry-run, and the errors a user sees. No collector here:
tests/test_export_otlp.py sends to a real one."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from spanjournal import reader
from spanjournal._process import self_identity
from spanjournal._schema import Completed, Dispatched, encode
from spanjournal.cli import main
from spanjournal.export import (
    DEFAULT_SERVICE_NAME,
    UNFINISHED_DESCRIPTION,
    ExportError,
    ExportStats,
    JournalSpan,
    Outcome,
    build_span,
    describe_span,
    export_journal,
    iso_to_ns,
    journal_spans,
    make_exporter,
    resolve_target,
)

SESSION = "sess-1"
TRACE = "0af7651916cd43dd8448eb211c80319c"
DEAD = {"host": "elsewhere.invalid", "pid": 4242, "proc_start": 77}
PY = sys.executable


@pytest.fixture(autouse=True)
def clean_otel_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep OTEL_* settings and proxies of the developer's shell out of the exporters."""
    for name in list(os.environ):
        if name.startswith("OTEL_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy"):
            monkeypatch.delenv(name)


def ts(second: int, micro: int = 0) -> str:
    """A journal timestamp on 2026-05-27 at 13:22:<second>.<micro> in UTC+8."""
    return f"2026-05-27T13:22:{second:02d}.{micro:06d}+08:00"


def ns(second: int, micro: int = 0) -> int:
    """The same instant as ts(), in unix nanoseconds, computed without iso_to_ns."""
    utc = datetime(2026, 5, 27, 5, 22, second, tzinfo=timezone.utc)
    return int(utc.timestamp()) * 1_000_000_000 + micro * 1_000


def span_hex(n: int) -> str:
    return f"{n:016x}"


def dispatched(chunk: str, second: int, span: int, **fields: Any) -> Dispatched:
    base: dict[str, Any] = {"session_id": SESSION, "trace_id": TRACE, **DEAD}
    base.update(fields)
    return Dispatched(ts=ts(second, span), chunk_id=chunk, span_id=span_hex(span), **base)


def completed(chunk: str, second: int, span: int | None, success: bool = True, **fields: Any) -> Completed:
    base: dict[str, Any] = {"session_id": SESSION, "host": DEAD["host"], "pid": DEAD["pid"]}
    base.update(fields)
    return Completed(
        ts=ts(second, 0), chunk_id=chunk, success=success, span_id=span_hex(span) if span else None, **base
    )


def write(path: Path, *events: Any) -> Path:
    with open(path, "ab") as f:
        for e in events:
            f.write(e if isinstance(e, bytes) else encode(e))
    return path


def spans_of(*paths: Path, **kwargs: Any) -> dict[str, JournalSpan]:
    """The rebuilt spans, by span id in hex (every test journal uses unique span ids)."""
    out = {}
    for s in journal_spans(list(paths), **kwargs):
        key = f"{s.span_id:016x}"
        assert key not in out, f"span {key} rebuilt twice"
        out[key] = s
    return out


# -- time parsing -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00.000001+00:00", 1_000),
        ("1970-01-01T08:00:01.000002+08:00", 1_000_002_000),
        ("1969-12-31T23:59:59.999999+00:00", -1_000),
        ("2026-05-27T13:22:01.123456+08:00", ns(1, 123456)),
        ("2026-05-27T05:22:01.123456Z", ns(1, 123456)),
        ("2026-05-26T23:52:01.123456-05:30", ns(1, 123456)),
        ("2026-05-27T13:22:59.999999+08:00", ns(59, 999999)),
        ("2026-05-27T13:22:01+08:00", ns(1)),
    ],
)
def test_iso_to_ns_is_exact(text: str, expected: int) -> None:
    assert iso_to_ns(text) == expected


def test_iso_to_ns_without_offset_is_local_time() -> None:
    local = datetime(2026, 5, 27, 13, 22, 1, 5).astimezone()
    offset = local.utcoffset()
    assert offset is not None
    utc = datetime(2026, 5, 27, 13, 22, 1, tzinfo=timezone.utc) - offset
    assert iso_to_ns("2026-05-27T13:22:01.000005") == int(utc.timestamp()) * 10**9 + 5_000


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T00:00:00+00:00", "1716800000"])
def test_iso_to_ns_rejects_what_is_not_a_time(text: str) -> None:
    with pytest.raises(ValueError):
        iso_to_ns(text)


# -- attempts to spans -----------------------------------------------------------------


def test_each_attempt_keeps_its_ids_times_and_outcome(tmp_path: Path) -> None:
    me_host, me_pid, me_start = self_identity()
    j = write(
        tmp_path / "run.jsonl",
        dispatched("root", 0, 1),
        dispatched("done", 1, 2, parent_span_id=span_hex(1), agent="router"),
        dispatched("fail", 2, 3, parent_span_id=span_hex(1)),
        dispatched("recon", 3, 4),
        dispatched("running", 4, 5, host=me_host, pid=me_pid, proc_start=me_start),
        completed("done", 10, 2, output_file="out/done.json", tokens_used=12),
        completed("fail", 11, 3, success=False, error="quota exceeded: 429", error_type="QuotaError"),
        completed("recon", 40, 4, reconciled=True, validation="json", host="reconciler", pid=1),
    )
    now = ns(50)
    spans = spans_of(j, now_ns=now)
    assert set(spans) == {span_hex(n) for n in (1, 2, 3, 4, 5)}

    done = spans[span_hex(2)]
    assert done.outcome is Outcome.DONE
    assert (done.trace_id, done.parent_span_id) == (int(TRACE, 16), 1)
    assert (done.start_ns, done.end_ns) == (ns(1, 2), ns(10))
    assert done.status == (StatusCode.OK, None)
    assert done.name == "invoke_agent router"

    fail = spans[span_hex(3)]
    assert fail.outcome is Outcome.FAILED
    assert fail.status == (StatusCode.ERROR, "quota exceeded: 429")
    assert fail.attributes()["error.type"] == "QuotaError"

    recon = spans[span_hex(4)]
    assert recon.outcome is Outcome.RECONCILED
    assert recon.status == (StatusCode.OK, None)
    assert recon.end_ns == ns(40)
    assert recon.attributes()["spanjournal.reconciled"] is True
    assert recon.attributes()["spanjournal.validation"] == "json"

    # Unfinished: ends at the last event its own process wrote (the failure at :11),
    # not at the reconciled completion another process wrote at :40.
    root = spans[span_hex(1)]
    assert root.outcome is Outcome.UNFINISHED
    assert root.parent_span_id is None
    assert (root.start_ns, root.end_ns) == (ns(0, 1), ns(11))
    assert root.status == (StatusCode.ERROR, UNFINISHED_DESCRIPTION)
    attrs = root.attributes()
    assert attrs["spanjournal.unfinished"] is True
    assert attrs["spanjournal.end_time_source"] == "process_last_event"
    assert "spanjournal.running" not in attrs

    running = spans[span_hex(5)]
    assert running.outcome is Outcome.RUNNING
    assert running.end_ns == now
    assert running.status == (StatusCode.UNSET, None)
    attrs = running.attributes()
    assert attrs["spanjournal.running"] is True
    assert attrs["spanjournal.end_time_source"] == "export_time"
    assert "spanjournal.unfinished" not in attrs


def test_unfinished_marker_only_where_the_chunk_still_needs_a_retry(tmp_path: Path) -> None:
    """A killed attempt whose chunk a later (or earlier) attempt completed is superseded, not unfinished."""
    j = write(
        tmp_path / "run.jsonl",
        dispatched("retried", 0, 1),
        dispatched("again", 1, 2),
        completed("again", 2, 2),
        dispatched("again", 3, 3),
        dispatched("retried", 4, 4),
        completed("retried", 5, 4),
        dispatched("lost", 6, 5),
    )
    spans = spans_of(j)
    for span_id in (1, 3):
        attrs = spans[span_hex(span_id)].attributes()
        assert spans[span_hex(span_id)].status == (StatusCode.ERROR, UNFINISHED_DESCRIPTION)
        assert attrs["spanjournal.superseded"] is True
        assert "spanjournal.unfinished" not in attrs
    assert spans[span_hex(5)].attributes()["spanjournal.unfinished"] is True
    assert [s.outcome for s in spans.values()].count(Outcome.UNFINISHED) == 3


def test_unfinished_spans_end_at_their_own_process_last_event(tmp_path: Path) -> None:
    other = {"host": "elsewhere.invalid", "pid": 4242, "proc_start": 99}  # the same pid, reused later
    j = write(
        tmp_path / "run.jsonl",
        dispatched("a", 0, 1),
        dispatched("b", 1, 2),
        completed("b", 9, 2),
        dispatched("c", 20, 3, **other),
        dispatched("d", 2, 4, host=None, pid=None, proc_start=None),
        dispatched("e", 3, 5, host=None, pid=None, proc_start=None),
    )
    spans = spans_of(j)
    assert spans[span_hex(1)].end_ns == ns(9)
    assert spans[span_hex(3)].end_ns == ns(20, 3)
    assert spans[span_hex(4)].end_ns == ns(3, 5)
    assert spans[span_hex(4)].end_source == "session_last_event"


def test_completion_pairing_follows_the_ledger(tmp_path: Path) -> None:
    first = write(tmp_path / "a.jsonl", completed("late", 5, 1), completed("nobody", 6, 9))
    second = write(
        tmp_path / "b.jsonl",
        dispatched("late", 0, 1),
        dispatched("nospan", 1, 2),
        completed("nospan", 3, None),
        completed("nodispatch", 4, None),
    )
    stats = ExportStats()
    spans = spans_of(first, second, stats=stats)
    assert spans[span_hex(1)].outcome is Outcome.DONE
    assert spans[span_hex(1)].end_ns == ns(5)
    assert spans[span_hex(2)].outcome is Outcome.DONE
    assert spans[span_hex(2)].end_ns == ns(3)
    assert stats.orphan_completions == 2
    assert stats.outcomes == {Outcome.DONE: 2}
    assert any("without a matching dispatch" in w for w in stats.warnings())


def test_attempts_without_ids_get_stable_derived_ones(tmp_path: Path) -> None:
    j = write(
        tmp_path / "run.jsonl",
        Dispatched(ts=ts(0), session_id=SESSION, chunk_id="plain"),
        Completed(ts=ts(2), session_id=SESSION, chunk_id="plain", success=True),
        dispatched("badids", 1, 3, trace_id="not-hex", parent_span_id="xyz"),
    )
    stats = ExportStats()
    first = list(journal_spans([j], stats=stats))
    again = list(journal_spans([j]))
    assert [(s.trace_id, s.span_id) for s in first] == [(s.trace_id, s.span_id) for s in again]
    plain, badids = first
    assert plain.outcome is Outcome.DONE
    assert plain.trace_id and plain.span_id and plain.synthetic_ids
    assert plain.attributes()["spanjournal.synthetic_ids"] is True
    assert badids.span_id == 3 and badids.parent_span_id is None and badids.trace_id != 0
    assert stats.synthetic_ids == 2


def test_files_that_are_not_journals_are_refused_when_named_and_left_out_of_a_directory(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    j = write(runs / "run.jsonl", Dispatched(ts=ts(0), session_id=SESSION, chunk_id="a", span_id=span_hex(1)))
    calls = runs / "calls.jsonl"
    calls.write_text('{"model": "m", "prompt": "p"}\n' * 3)
    (runs / "empty.jsonl").write_text("")  # an empty journal is a journal
    stats = ExportStats()
    assert [s.dispatch.chunk_id for s in journal_spans([runs], stats=stats)] == ["a"]
    assert stats.skipped == [f"{calls}: skipped, not a journal (no line is a journal event)"]
    assert stats.read.bad_lines == 0 and stats.read.files == [str(runs / "empty.jsonl"), str(j)]
    with pytest.raises(reader.NotAJournalError, match=r"calls\.jsonl: not a journal"):
        list(journal_spans([j, calls]))


def test_dispatch_with_unreadable_time_is_skipped_and_counted(tmp_path: Path) -> None:
    j = write(tmp_path / "run.jsonl", Dispatched(ts="soon", session_id=SESSION, chunk_id="x", span_id=span_hex(1)))
    stats = ExportStats()
    assert list(journal_spans([j], stats=stats)) == []
    assert stats.bad_times == 1
    assert "unreadable ts" in stats.warnings()[0]


def test_completion_time_before_start_is_clamped(tmp_path: Path) -> None:
    j = write(tmp_path / "run.jsonl", dispatched("x", 5, 1), completed("x", 4, 1))
    (span,) = journal_spans([j])
    assert span.end_ns == span.start_ns


def test_attribute_mapping(tmp_path: Path) -> None:
    j = write(
        tmp_path / "run.jsonl",
        dispatched(
            "batch-3-case-027",
            0,
            1,
            task_description="Route prompt",
            items_assigned=2,
            output_file="responses/expected.json",
            batch="batch-3",
            agent="router",
            attrs={
                "user.tag": "x",
                "user.n": 3,
                "user.ratio": 0.5,
                "user.flags": [True, False],
                "user.names": ["a", "b"],
                "user.mixed": [1, "a"],
                "user.nested": {"k": [1, 2]},
                "user.huge": 2**70,
                "user.null": None,
                "user.empty": [],
            },
        ),
        completed(
            "batch-3-case-027",
            3,
            1,
            success=False,
            error="boom",
            error_type="ValueError",
            output_file="responses/actual.json",
            tokens_used=1234,
            input_tokens=1000,
            output_tokens=234,
        ),
    )
    (span,) = journal_spans([j])
    assert span.attributes() == {
        "user.tag": "x",
        "user.n": 3,
        "user.ratio": 0.5,
        "user.flags": (True, False),
        "user.names": ("a", "b"),
        "user.mixed": '[1,"a"]',
        "user.nested": '{"k":[1,2]}',
        "user.huge": str(2**70),
        "user.empty": "[]",
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "router",
        "spanjournal.chunk_id": "batch-3-case-027",
        "spanjournal.session_id": SESSION,
        "spanjournal.task_description": "Route prompt",
        "spanjournal.items_assigned": 2,
        "spanjournal.batch": "batch-3",
        "spanjournal.output_file": "responses/actual.json",
        "spanjournal.tokens_used": 1234,
        "gen_ai.usage.input_tokens": 1000,
        "gen_ai.usage.output_tokens": 234,
        "error.type": "ValueError",
    }


def test_service_name_from_journal_then_session_then_caller(tmp_path: Path) -> None:
    j = write(
        tmp_path / "run.jsonl",
        dispatched("a", 0, 1, service_name="router-bench"),
        dispatched("b", 1, 2),
        dispatched("c", 2, 3, session_id="other"),
    )
    by_caller = spans_of(j, service_name="from-flag")
    assert [s.service_name for s in by_caller.values()] == ["router-bench", "router-bench", "from-flag"]
    assert spans_of(j)[span_hex(3)].service_name == DEFAULT_SERVICE_NAME


def test_only_selects_outcomes(tmp_path: Path) -> None:
    j = write(
        tmp_path / "run.jsonl",
        dispatched("ok", 0, 1),
        completed("ok", 1, 1),
        dispatched("bad", 0, 2),
        completed("bad", 1, 2, success=False, error="x"),
        dispatched("lost", 0, 3),
    )
    assert [s.outcome for s in journal_spans([j], only="unfinished")] == [Outcome.UNFINISHED]
    assert [s.outcome for s in journal_spans([j], only="failed")] == [Outcome.FAILED]
    assert len(list(journal_spans([j], only=["failed", "unfinished"]))) == 2
    assert len(list(journal_spans([j], only="all"))) == 3
    with pytest.raises(ValueError, match="only must be one of"):
        list(journal_spans([j], only="done"))


def test_build_span_encodes_as_otlp(tmp_path: Path) -> None:
    j = write(
        tmp_path / "run.jsonl",
        dispatched("a", 0, 1, agent="router", service_name="router-bench"),
        dispatched("b", 1, 2, parent_span_id=span_hex(1)),
        completed("b", 2, 2, success=False, error="quota"),
    )
    spans = [build_span(s) for s in journal_spans([j])]
    child, parent = spans
    assert isinstance(child, ReadableSpan)
    assert child.kind is SpanKind.CLIENT
    assert child.parent is not None and child.parent.span_id == 1
    assert child.resource.attributes["service.name"] == "router-bench"
    assert child.resource.attributes["spanjournal.session_id"] == SESSION
    assert child.resource is parent.resource
    assert child.instrumentation_scope is not None and child.instrumentation_scope.name == "spanjournal"
    request = encode_spans(spans)
    (resource_spans,) = request.resource_spans
    encoded = {s.span_id.hex(): s for s in resource_spans.scope_spans[0].spans}
    b = encoded[span_hex(2)]
    assert b.trace_id.hex() == TRACE
    assert b.parent_span_id.hex() == span_hex(1)
    assert (b.start_time_unix_nano, b.end_time_unix_nano) == (ns(1, 2), ns(2))
    assert b.status.code == 2 and b.status.message == "quota"
    a = encoded[span_hex(1)]
    assert a.name == "invoke_agent router"
    assert a.parent_span_id == b""
    assert a.status.message == UNFINISHED_DESCRIPTION


def test_describe_span_is_one_readable_line(tmp_path: Path) -> None:
    j = write(tmp_path / "run.jsonl", dispatched("batch-3-case-027", 1, 1, agent="router"), dispatched("x", 2, 2))
    line = describe_span(next(iter(journal_spans([j]))))
    assert "\n" not in line
    for part in (
        "unfinished",
        ts(1, 1),
        'ERROR "no completion recorded"',
        "invoke_agent router",
        "chunk=batch-3-case-027",
        f"trace={TRACE}",
        f"span={span_hex(1)}",
        "parent=-",
        f"service={DEFAULT_SERVICE_NAME}",
        "end=process_last_event",
    ):
        assert part in line


# -- streaming and sending --------------------------------------------------------------


def many_pairs(path: Path, chunks: int) -> Path:
    with open(path, "wb") as f:
        for i in range(chunks):
            f.write(encode(dispatched(f"c-{i}", i % 60, i + 1)))
            f.write(encode(completed(f"c-{i}", i % 60, i + 1)))
    return path


def test_spans_stream_while_the_journal_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "BLOCK_BYTES", 4096)
    j = many_pairs(tmp_path / "big.jsonl", 2000)
    size = j.stat().st_size
    read_so_far = [0]
    read_at_span = []
    for _ in journal_spans([j], progress=lambda done: read_so_far.__setitem__(0, done)):
        read_at_span.append(read_so_far[0])
    assert len(read_at_span) == 2000
    assert read_at_span[0] < size / 10


class RecordingExporter(SpanExporter):
    """Keeps the batch sizes it was given; fails from call ``fail_from`` on."""

    def __init__(self, fail_from: int | None = None) -> None:
        self.batches: list[int] = []
        self.fail_from = fail_from

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.batches.append(len(spans))
        if self.fail_from is not None and len(self.batches) >= self.fail_from:
            import logging

            logging.getLogger("opentelemetry.exporter.test").warning("Connection refused by test")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS


def test_export_journal_sends_in_batches(tmp_path: Path) -> None:
    j = many_pairs(tmp_path / "run.jsonl", 5)
    exporter = InMemorySpanExporter()
    stats = export_journal([j], exporter, batch_size=2)
    assert (stats.sent, stats.batches, stats.spans) == (5, 3, 5)
    assert sorted(s.context.span_id for s in exporter.get_finished_spans()) == [1, 2, 3, 4, 5]
    recording = RecordingExporter()
    export_journal([j], recording, batch_size=2)
    assert recording.batches == [2, 2, 1]


def test_export_journal_stops_at_the_first_refused_batch(tmp_path: Path) -> None:
    j = many_pairs(tmp_path / "run.jsonl", 10)
    exporter = RecordingExporter(fail_from=2)
    with pytest.raises(ExportError) as caught:
        export_journal([j], exporter, batch_size=3)
    assert exporter.batches == [3, 3]
    assert caught.value.sent == 3
    assert caught.value.reason == "connection refused"


# -- exporter set-up -------------------------------------------------------------------


ENDPOINT, TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
PROTOCOL, TRACES_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
HTTP = "http/protobuf"


@pytest.mark.parametrize(
    ("endpoint", "protocol", "env", "expected"),
    [
        (None, None, {}, ("grpc", "http://localhost:4317")),
        (None, HTTP, {}, (HTTP, "http://localhost:4318/v1/traces")),
        ("collector:4318", None, {}, (HTTP, "http://collector:4318/v1/traces")),
        ("http://c:4318/v1/traces", None, {}, (HTTP, "http://c:4318/v1/traces")),
        ("http://c:4317", None, {}, ("grpc", "http://c:4317")),
        ("http://c:9999", HTTP, {}, (HTTP, "http://c:9999/v1/traces")),
        (None, None, {ENDPOINT: "https://o.example:4318/"}, (HTTP, "https://o.example:4318/v1/traces")),
        (None, None, {ENDPOINT: "https://o.example:4317"}, ("grpc", "https://o.example:4317")),
        (None, None, {ENDPOINT: "https://o.example", PROTOCOL: HTTP}, (HTTP, "https://o.example/v1/traces")),
        (None, None, {TRACES_ENDPOINT: "https://t:4318/x", ENDPOINT: "http://no:4317"}, (HTTP, "https://t:4318/x")),
        (None, None, {PROTOCOL: "grpc", TRACES_PROTOCOL: HTTP}, (HTTP, "http://localhost:4318/v1/traces")),
        ("http://flag:4317", "grpc", {ENDPOINT: "http://env:4318", PROTOCOL: HTTP}, ("grpc", "http://flag:4317")),
    ],
)
def test_target_from_options_then_environment(
    monkeypatch: pytest.MonkeyPatch,
    endpoint: str | None,
    protocol: str | None,
    env: dict[str, str],
    expected: tuple[str, str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert resolve_target(endpoint, protocol) == expected


def test_unsupported_protocol_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"):
        resolve_target()


def test_make_exporter_builds_the_protocol_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://env-host:4318/v1/traces")
    exporter, protocol, url = make_exporter(protocol="http/protobuf", timeout=1.5)
    try:
        assert isinstance(exporter, HttpExporter) and protocol == "http/protobuf"
        assert url == "http://env-host:4318/v1/traces"
    finally:
        exporter.shutdown()
    exporter, protocol, url = make_exporter("http://127.0.0.1:4317", "grpc")
    try:
        assert isinstance(exporter, GrpcExporter) and (protocol, url) == ("grpc", "http://127.0.0.1:4317")
    finally:
        exporter.shutdown()


# -- the command -----------------------------------------------------------------------


def test_dry_run_prints_each_span_and_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j = write(
        tmp_path / "run.jsonl",
        dispatched("a", 0, 1),
        completed("a", 1, 1),
        dispatched("b", 0, 2),
        completed("b", 1, 2, success=False, error="x"),
        dispatched("c", 0, 3),
    )
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
        code = main(["export", str(j), "--dry-run", "--endpoint", endpoint, "--protocol", "grpc"])
        with pytest.raises(BlockingIOError):
            listener.accept()
    out, err = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == ["done", "failed", "unfinished"]
    assert err.splitlines() == [
        f"would send 3 spans (1 done, 1 failed, 1 unfinished) to {endpoint} (grpc); nothing sent"
    ]


def test_dry_run_warns_about_bad_lines_and_goes_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    j = write(tmp_path / "run.jsonl", dispatched("a", 0, 1), b"{not json\n", dispatched("b", 0, 2))
    assert main(["export", str(j), "--dry-run", "--only", "unfinished"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert f"{j}:2: " in err
    assert err.splitlines()[-1].startswith("would send 2 spans (2 unfinished)")


@pytest.mark.parametrize("kind", ["missing", "empty-dir"])  # unreadable: in test_cli_bad_input, for root too
def test_unreadable_journals_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    target = tmp_path / "run.jsonl"
    if kind == "empty-dir":
        target = tmp_path / "empty"
        target.mkdir()
    assert main(["export", str(target), "--dry-run"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("spanjournal export: error: ")


def test_unsupported_protocol_from_env_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    j = write(tmp_path / "run.jsonl", dispatched("a", 0, 1))
    assert main(["export", str(j)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spanjournal export: error: OTEL_EXPORTER_OTLP_PROTOCOL='http/json'")
    assert len(err.splitlines()) == 1


class _Receiver(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP posts and keeps their path, headers and span count."""

    received: ClassVar[list[tuple[str, dict[str, str], int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        self.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, count))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_endpoint_protocol_and_headers_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    j = many_pairs(tmp_path / "run.jsonl", 3)
    _Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0ken,x-tenant=team-a")
        assert main(["export", str(j), "--batch-size", "2"]) == 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert [(path, count) for path, _, count in _Receiver.received] == [("/v1/traces", 2), ("/v1/traces", 1)]
    headers = _Receiver.received[0][1]
    assert (headers["authorization"], headers["x-tenant"]) == ("Bearer t0ken", "team-a")
    assert capsys.readouterr().err.startswith("sent 3 spans (3 done) to http://127.0.0.1:")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_unreachable_backend_is_one_clear_line_and_exit_1_in_bounded_time(tmp_path: Path, protocol: str) -> None:
    j = write(tmp_path / "run.jsonl", dispatched("a", 0, 1), completed("a", 1, 1))
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    started = time.monotonic()
    result = subprocess.run(
        [PY, "-m", "spanjournal.cli", "export", str(j), "--endpoint", endpoint, "--protocol", protocol,
         "--timeout", "1"],
        capture_output=True, text=True, timeout=30, env=env,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"spanjournal export: error: cannot send spans to {endpoint}")
    assert f"({protocol}): connection refused (nothing sent)" in lines[0]
    assert elapsed < 10


def test_help_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["export", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "spanjournal export runs/bench.jsonl" in out
    for option in ("--endpoint", "--protocol", "--service-name", "--only", "--dry-run"):
        assert option in out


def test_the_command_module_imports_the_sdk_only_when_it_runs() -> None:
    code = "import sys, spanjournal.cli.export; print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    result = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert result.stdout.strip() == "[]"


def test_stats_summary_reads_well() -> None:
    stats = ExportStats()
    assert stats.summary() == "0 spans"
    stats.outcomes.update({Outcome.DONE: 1})
    assert stats.summary() == "1 span (1 done)"
