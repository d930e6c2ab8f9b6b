"""JournalSpanProcessor: which spans become which lines, and that it never breaks the application."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from spanjournal import Journal, JournalWriteError, semconv
from spanjournal._process import self_identity
from spanjournal._schema import Completed, Dispatched, decode_line
from spanjournal.processor import (
    MAX_ERROR_CHARS,
    JournalSpanProcessor,
    TimestampFormatter,
    bound_error,
    latest_processor,
    resolve_tz,
)
from spanjournal.testing import MemoryJournal

START_ATTRIBUTES: dict[str, AttributeValue] = {
    semconv.GEN_AI_OPERATION_NAME: semconv.INVOKE_AGENT,
    semconv.GEN_AI_AGENT_NAME: "router",
    semconv.CHUNK_ID: "batch-3-case-027",
    semconv.SESSION_ID: "session-from-span",
    semconv.TASK_DESCRIPTION: "Route prompt to expected skill",
    semconv.ITEMS_ASSIGNED: 1,
    semconv.OUTPUT_FILE: "responses/027.json",
    semconv.BATCH: "batch-3",
}


class Setup:
    def __init__(self, journal: Any, **processor_kwargs: Any) -> None:
        self.journal = journal
        self.exporter = InMemorySpanExporter()
        self.processor = JournalSpanProcessor(journal, **processor_kwargs)
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": "router-bench"}), shutdown_on_exit=False
        )
        self.provider.add_span_processor(self.processor)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("test")

    def lines(self) -> list[dict[str, Any]]:
        return [msgspec.json.decode(line) for line in self.journal.lines]


@pytest.fixture
def setup() -> Iterator[Setup]:
    s = Setup(MemoryJournal(), session_id="session-default", tz="UTC")
    yield s
    s.provider.shutdown()


def test_dispatch_span_becomes_a_dispatched_and_a_completed_line(setup: Setup) -> None:
    with setup.tracer.start_as_current_span("outer"), setup.tracer.start_as_current_span(
        "invoke_agent router", attributes=START_ATTRIBUTES
    ) as span:
        span.set_attributes({semconv.GEN_AI_INPUT_TOKENS: 1000, semconv.GEN_AI_OUTPUT_TOKENS: 234})
    outer, inner = sorted(setup.exporter.get_finished_spans(), key=lambda s: s.name != "outer")
    dispatched, completed = setup.journal.events()
    assert isinstance(dispatched, Dispatched) and isinstance(completed, Completed)
    host, pid, proc_start = self_identity()
    ctx = inner.context
    assert dispatched == Dispatched(
        ts=TimestampFormatter("UTC")(inner.start_time or 0),
        session_id="session-from-span",
        chunk_id="batch-3-case-027",
        task_description="Route prompt to expected skill",
        items_assigned=1,
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        parent_span_id=f"{outer.context.span_id:016x}",
        host=host,
        pid=pid,
        proc_start=proc_start,
        output_file="responses/027.json",
        cwd=os.getcwd(),
        batch="batch-3",
        agent="router",
        service_name="router-bench",
    )
    assert completed == Completed(
        ts=TimestampFormatter("UTC")(inner.end_time or 0),
        session_id="session-from-span",
        chunk_id="batch-3-case-027",
        success=True,
        output_file="responses/027.json",
        input_tokens=1000,
        output_tokens=234,
        duration_ms=((inner.end_time or 0) - (inner.start_time or 0)) / 1e6,
        trace_id=f"{ctx.trace_id:032x}",
        span_id=f"{ctx.span_id:016x}",
        host=host,
        pid=pid,
    )


def test_lines_follow_the_schema_v_first_no_nulls_only_known_fields(setup: Setup) -> None:
    with setup.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "c-1"}) as span:
        span.set_status(Status(StatusCode.ERROR, "quota exceeded"))
    for raw in setup.journal.lines:
        assert raw.startswith(b'{"v":1,"event":"subagent_') and raw.endswith(b"}\n")
        obj = msgspec.json.decode(raw)
        assert None not in obj.values()
        event = decode_line(raw.rstrip(b"\n"))
        assert set(obj) <= {"v", "event", *type(event).__struct_fields__}
    first = setup.lines()[0]
    assert first["session_id"] == "session-default"  # no span attribute: the processor's own


def test_failed_span_records_error_and_error_type(setup: Setup) -> None:
    with setup.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "c-1"}) as span:
        span.set_attribute(semconv.ERROR_TYPE, "QuotaError")
        span.set_status(Status(StatusCode.ERROR, "q" * (MAX_ERROR_CHARS + 50)))
    done = setup.lines()[1]
    assert done["success"] is False
    assert done["error_type"] == "QuotaError"
    assert done["error"] == bound_error("q" * (MAX_ERROR_CHARS + 50))
    assert len(done["error"]) == MAX_ERROR_CHARS and "more characters]" in done["error"]


def test_error_type_is_ignored_on_success(setup: Setup) -> None:
    with setup.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "c-1"}) as span:
        span.set_attribute(semconv.ERROR_TYPE, "Whatever")
    assert "error_type" not in setup.lines()[1]


def test_other_spans_pass_through_untouched(setup: Setup) -> None:
    with setup.tracer.start_as_current_span("db query", attributes={"db.system": "sqlite"}):
        pass
    with setup.tracer.start_as_current_span("llm call", attributes={semconv.GEN_AI_OPERATION_NAME: "chat"}):
        pass
    assert setup.journal.lines == []
    assert [s.name for s in setup.exporter.get_finished_spans()] == ["db query", "llm call"]


def test_extra_start_attributes_are_kept_under_attrs(setup: Setup) -> None:
    extra: dict[str, AttributeValue] = {"app.model": "gpt-x", "app.retries": 2, "app.tags": ("a", "b")}
    attrs = {**START_ATTRIBUTES, **extra}
    with setup.tracer.start_as_current_span("x", attributes=attrs):
        pass
    assert setup.lines()[0]["attrs"] == {"app.model": "gpt-x", "app.retries": 2, "app.tags": ["a", "b"]}
    with setup.tracer.start_as_current_span("x", attributes=START_ATTRIBUTES):
        pass
    assert "attrs" not in setup.lines()[2]


def test_attribute_values_of_other_types_are_written_as_the_schema_types_them(setup: Setup) -> None:
    attrs: dict[str, AttributeValue] = {
        semconv.CHUNK_ID: 42,
        semconv.TASK_DESCRIPTION: 7,
        semconv.ITEMS_ASSIGNED: "three",
        semconv.BATCH: 3,
        semconv.GEN_AI_AGENT_NAME: True,
        semconv.SESSION_ID: 5,
    }
    with setup.tracer.start_as_current_span("x", attributes=attrs) as span:
        span.set_attributes({semconv.GEN_AI_INPUT_TOKENS: "many", semconv.OUTPUT_FILE: 9})
    dispatched, completed = setup.journal.events()  # decoding validates every field's type
    assert isinstance(dispatched, Dispatched) and isinstance(completed, Completed)
    assert (dispatched.chunk_id, dispatched.task_description, dispatched.batch) == ("42", "7", "3")
    assert dispatched.items_assigned is None and dispatched.session_id == "5"
    assert completed.input_tokens is None and completed.output_file == "9"


class ExplodingJournal:
    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def append_bytes(self, line: bytes) -> None:
        self.calls += 1
        raise self.error

    def flush(self) -> None:
        raise self.error

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    "error", [JournalWriteError(28, "No space left on device"), RuntimeError("bug"), MemoryError()]
)
def test_processor_never_raises_into_user_code(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    s = Setup(ExplodingJournal(error))
    with caplog.at_level(logging.DEBUG, logger="spanjournal"):
        for _ in range(3):
            with s.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "c-1"}):
                pass
        assert s.processor.force_flush() is False
    assert s.processor.errors == 7  # 3 dispatched, 3 completed, 1 flush
    assert s.processor.last_error is error
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, "only the first failure is logged loudly"
    assert "c-1" in errors[0].getMessage()
    assert len(s.exporter.get_finished_spans()) == 3, "spans still reach the other processors"


def test_shutdown_closes_a_journal_it_opened_and_flushes_one_it_was_given(tmp_path: Path) -> None:
    owned = JournalSpanProcessor(tmp_path / "owned.jsonl", durability="none")
    given_journal = Journal(tmp_path / "given.jsonl", durability="none")
    given = JournalSpanProcessor(given_journal)
    for processor in (owned, given):
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(processor)
        with provider.get_tracer("t").start_as_current_span("x", attributes={semconv.CHUNK_ID: "c"}):
            pass
        provider.shutdown()
        assert processor.is_shutdown
        with provider.get_tracer("t").start_as_current_span("x", attributes={semconv.CHUNK_ID: "c"}):
            pass  # inert after shutdown: nothing written, nothing raised
        assert processor.errors == 0
    assert isinstance(owned.journal, Journal) and owned.journal.closed
    assert not given_journal.closed
    assert (tmp_path / "owned.jsonl").read_bytes().count(b"\n") == 2
    assert (tmp_path / "given.jsonl").read_bytes().count(b"\n") == 2
    given_journal.close()


def test_force_flush_writes_buffered_events(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", durability="none")
    s = Setup(journal)
    with s.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "c"}):
        pass
    assert (tmp_path / "j.jsonl").read_bytes() == b""
    assert s.provider.force_flush()
    assert (tmp_path / "j.jsonl").read_bytes().count(b"subagent_") == 2
    journal.close()


def test_latest_processor_skips_shut_down_ones() -> None:
    first = JournalSpanProcessor(MemoryJournal())
    second = JournalSpanProcessor(MemoryJournal())
    assert latest_processor() is second
    second.shutdown()
    assert latest_processor() is first
    first.shutdown()


def test_concurrent_spans_from_many_threads_give_whole_paired_lines(setup: Setup) -> None:
    def work(t: int) -> None:
        for i in range(50):
            with setup.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: f"t{t}-{i}"}):
                pass

    threads = [threading.Thread(target=work, args=(t,)) for t in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    events = setup.journal.events()
    assert len(events) == 16 * 50 * 2
    started = {e.span_id: e.chunk_id for e in events if isinstance(e, Dispatched)}
    ended = {e.span_id: e.chunk_id for e in events if isinstance(e, Completed)}
    assert started == ended and len(set(started.values())) == 800


# -- time stamps ----------------------------------------------------------------------

ZONES = ["UTC", "Asia/Kuala_Lumpur", "America/New_York", "Europe/London", "Australia/Lord_Howe", None]


def expected_iso(ns: int, tz: str | None) -> str:
    utc = datetime.fromtimestamp(ns // 10**9, timezone.utc).replace(microsecond=(ns % 10**9) // 1000)
    zone = resolve_tz(tz)
    return (utc.astimezone() if zone is None else utc.astimezone(zone)).isoformat(timespec="microseconds")


@settings(max_examples=300, deadline=None)
@given(
    ns=st.integers(min_value=0, max_value=4_102_444_800 * 10**9),
    tz=st.sampled_from(ZONES),
    near=st.sampled_from([None, 0, 1, 999, 999_999_999]),
)
def test_timestamps_equal_isoformat_with_microseconds(ns: int, tz: str | None, near: int | None) -> None:
    if near is not None:
        ns = ns - ns % 10**9 + near
    assert TimestampFormatter(tz)(ns) == expected_iso(ns, tz)


def test_timestamps_across_a_dst_change_and_out_of_order() -> None:
    fmt = TimestampFormatter("America/New_York")
    change = int(datetime(2026, 3, 8, 7, 0, 0, tzinfo=timezone.utc).timestamp()) * 10**9  # 03:00 EDT
    stamps = [change - 1, change, change + 5 * 10**8, change - 10**9, change + 3600 * 10**9, change - 1]
    assert [fmt(ns) for ns in stamps] == [expected_iso(ns, "America/New_York") for ns in stamps]
    assert fmt(change - 1).endswith("-05:00") and fmt(change).endswith("-04:00")


def test_resolve_tz() -> None:
    assert resolve_tz(None) is None and resolve_tz("local") is None
    assert resolve_tz("UTC") is timezone.utc and resolve_tz(timezone.utc) is timezone.utc
    with pytest.raises(ValueError, match="unknown time zone"):
        resolve_tz("Mars/Olympus_Mons")


def test_local_time_zone_follows_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kuala_Lumpur")
    time.tzset()
    try:
        assert TimestampFormatter()(1_779_859_321_123_456_789) == "2026-05-27T13:22:01.123456+08:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_bound_error() -> None:
    assert bound_error("short") == "short"
    assert bound_error("abcdef", limit=3) == "abc"
    assert bound_error("e" * 100, limit=50) == "e" * 28 + "[… 72 more characters]"


def test_journal_file_lines_read_back_through_the_ledger(tmp_path: Path) -> None:
    from spanjournal import ChunkState, read_ledger

    path = tmp_path / "run.jsonl"
    s = Setup(Journal(path, durability="flush"))
    with s.tracer.start_as_current_span("ok", attributes={semconv.CHUNK_ID: "ok"}):
        pass
    with s.tracer.start_as_current_span("bad", attributes={semconv.CHUNK_ID: "bad"}) as span:
        span.set_status(Status(StatusCode.ERROR, "nope"))
    span = s.tracer.start_span("open", attributes={semconv.CHUNK_ID: "open"})
    ledger = read_ledger(path)
    assert not ledger.issues
    assert ledger.state("ok") is ChunkState.DONE
    assert ledger.state("bad") is ChunkState.FAILED and ledger["bad"].last_error == "nope"
    assert ledger.state("open") is ChunkState.RUNNING, "this very process is alive"
    span.end()
    assert read_ledger(path).state("open") is ChunkState.DONE


@pytest.mark.integration
def test_a_forked_child_writes_its_own_pid(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    s = Setup(Journal(path, durability="flush"))
    with s.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "parent"}):
        pass
    pid = os.fork()
    if pid == 0:  # the child: journal one dispatch, then leave without running any cleanup
        code = 1
        try:
            with s.tracer.start_as_current_span("x", attributes={semconv.CHUNK_ID: "child"}):
                pass
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG)) == (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    if done == (0, 0):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    lines = [msgspec.json.decode(line) for line in path.read_bytes().splitlines()]
    pids = {(e["chunk_id"], e["event"]): e["pid"] for e in lines}
    assert pids[("parent", "subagent_dispatched")] == pids[("parent", "subagent_completed")] == os.getpid()
    assert pids[("child", "subagent_dispatched")] == pids[("child", "subagent_completed")] == pid


# -- reading spans: the checked private fast path and the public API ---------------------


def test_the_private_fast_path_checks_itself_and_falls_back_without_raising(monkeypatch: pytest.MonkeyPatch) -> None:
    from spanjournal import processor as processor_module

    assert processor_module.private_fields_match_public_api(), "on the installed SDK the check passes"
    monkeypatch.setattr(processor_module, "BoundedAttributes", dict)  # as if the SDK renamed its attribute class
    assert processor_module.private_fields_match_public_api() is False

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an SDK without TracerProvider as we know it")

    monkeypatch.setattr(processor_module, "TracerProvider", broken)
    assert processor_module.private_fields_match_public_api() is False


@pytest.mark.parametrize("failed", [False, True])
def test_the_fast_path_and_the_public_api_write_identical_lines(monkeypatch: pytest.MonkeyPatch, failed: bool) -> None:
    from spanjournal import processor as processor_module

    provider = TracerProvider(resource=Resource.create({"service.name": "router-bench"}), shutdown_on_exit=False)
    tracer = provider.get_tracer("t")
    extra: dict[str, AttributeValue] = {"app.model": "gpt-x", "app.tags": ("a", "b")}
    journals = {private: MemoryJournal() for private in (True, False)}
    processors = {private: JournalSpanProcessor(j, session_id="s", tz="UTC") for private, j in journals.items()}
    with tracer.start_as_current_span("outer"):
        span = tracer.start_span("invoke_agent router", attributes={**START_ATTRIBUTES, **extra})
    for private, processor in processors.items():
        monkeypatch.setattr(processor_module, "_PRIVATE_FIELDS", private)
        processor.on_start(span)  # type: ignore[arg-type]
    span.set_attributes({semconv.GEN_AI_INPUT_TOKENS: 1000, semconv.GEN_AI_OUTPUT_TOKENS: 234, semconv.TOKENS_USED: 9})
    span.set_attribute(semconv.ERROR_TYPE, "QuotaError")
    if failed:
        span.set_status(Status(StatusCode.ERROR, "quota exceeded"))
    span.end()
    for private, processor in processors.items():
        monkeypatch.setattr(processor_module, "_PRIVATE_FIELDS", private)
        processor.on_end(span)  # type: ignore[arg-type]
        processor.shutdown()
    lines = {private: journal.lines for private, journal in journals.items()}
    assert lines[True] == lines[False]
    dispatched, completed = (msgspec.json.decode(line) for line in lines[True])
    assert dispatched["attrs"] == {"app.model": "gpt-x", "app.tags": ["a", "b"]} and "parent_span_id" in dispatched
    assert (completed["success"], completed.get("error"), completed.get("error_type")) == (
        (False, "quota exceeded", "QuotaError") if failed else (True, None, None)
    )
    assert (completed["input_tokens"], completed["output_tokens"], completed["tokens_used"]) == (1000, 234, 9)
