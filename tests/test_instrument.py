"""The dispatch decorator and context manager: attributes at start, outcomes, strictness, sampling."""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode

import spanjournal
from spanjournal import Dispatched, Journal, JournalWriteError, instrument
from spanjournal import config as sj_config
from spanjournal.processor import MAX_ERROR_CHARS, JournalSpanProcessor
from spanjournal.testing import Capture, MemoryJournal, capture


class StartAttributes(SpanProcessor):
    """Remembers what each span looked like when it started (all a processor's on_start sees)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, SpanKind, dict[str, Any]]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.seen.append((span.name, span.kind, dict(span.attributes or {})))


@pytest.fixture
def cap() -> Iterator[Capture]:
    with capture() as c:
        yield c


def lines(c: Capture) -> list[dict[str, Any]]:
    return [msgspec.json.decode(line) for line in c.journal.lines]


def test_identifying_attributes_are_on_the_span_at_start(cap: Capture) -> None:
    started = StartAttributes()
    cap.spanjournal.tracer_provider.add_span_processor(started)

    @spanjournal.dispatch(
        chunk_id=lambda case: f"batch-{case['batch']}-case-{case['id']:03d}",
        task_description="Route prompt to expected skill",
        items_assigned=1,
        output_file=lambda case: Path("responses") / f"{case['id']:03d}.json",
        batch=lambda case: f"batch-{case['batch']}",
        agent_name="router",
        attributes={"app.model": "m-1"},
    )
    def run_agent(case: dict[str, int]) -> str:
        return "skill-a"

    assert run_agent({"batch": 3, "id": 27}) == "skill-a"
    name, kind, attrs = started.seen[0]
    assert name == "invoke_agent router" and kind is SpanKind.CLIENT
    assert attrs == {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "router",
        "spanjournal.chunk_id": "batch-3-case-027",
        "spanjournal.session_id": "test-session",
        "spanjournal.task_description": "Route prompt to expected skill",
        "spanjournal.items_assigned": 1,
        "spanjournal.output_file": os.path.join("responses", "027.json"),
        "spanjournal.batch": "batch-3",
        "app.model": "m-1",
    }
    dispatched = lines(cap)[0]
    assert dispatched["chunk_id"] == "batch-3-case-027" and dispatched["agent"] == "router"
    assert dispatched["attrs"] == {"app.model": "m-1"} and dispatched["batch"] == "batch-3"


def test_agent_name_defaults_to_the_function_name_and_wraps_keeps_metadata(cap: Capture) -> None:
    @spanjournal.dispatch("c-1")
    def summarise(text: str) -> str:
        """Summarise a text."""
        return text

    assert summarise.__name__ == "summarise" and summarise.__doc__ == "Summarise a text."
    summarise("x")
    assert cap.spans()[0].name == "invoke_agent summarise"
    assert lines(cap)[0]["agent"] == "summarise"


def test_callables_get_the_functions_arguments_by_position_or_by_name(cap: Capture) -> None:
    class Router:
        @spanjournal.dispatch(chunk_id=lambda case: f"m-{case}", task_description=lambda self, case: self.task)
        def run(self, case: int, model: str = "small") -> int:
            return case

        task = "method task"

    @spanjournal.dispatch(
        chunk_id=lambda case, model: f"{model}-{case}",
        output_file=lambda model: f"{model}.json",
        items_assigned=lambda *args, **kwargs: len(args) + len(kwargs),
    )
    def run(case: int, model: str = "small", *, retries: int = 0) -> None:
        pass

    Router().run(1)
    run(2)
    run(3, "big")
    run(case=4, model="huge", retries=2)
    dispatched = [e for e in lines(cap) if e["event"] == "subagent_dispatched"]
    assert [(e["chunk_id"], e.get("output_file"), e.get("items_assigned")) for e in dispatched] == [
        ("m-1", None, 1),  # one item unless said otherwise
        ("small-2", "small.json", 1),
        ("big-3", "big.json", 2),
        ("huge-4", "huge.json", 3),
    ]
    assert dispatched[0]["task_description"] == "method task"


def test_bad_constant_arguments_fail_at_decoration_and_bad_values_before_the_body() -> None:
    with pytest.raises(TypeError, match="items_assigned must be an int"):
        spanjournal.dispatch("c", items_assigned="one")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_id must be a non-empty string"):
        spanjournal.dispatch("")
    with pytest.raises(TypeError, match="generator function"):

        @spanjournal.dispatch("c")
        def gen() -> Iterator[int]:
            yield 1

    ran = []

    @spanjournal.dispatch(chunk_id=lambda x: None)
    def body(x: int) -> None:
        ran.append(x)

    with capture() as c, pytest.raises(ValueError, match="chunk_id"):
        body(1)
    assert ran == [] and c.journal.lines == []


def test_exception_marks_failure_and_is_reraised_unchanged(cap: Capture) -> None:
    class QuotaError(Exception):
        pass

    error = QuotaError("quota exceeded " + "x" * (MAX_ERROR_CHARS + 10))

    @spanjournal.dispatch("c-1")
    def agent() -> None:
        spanjournal.current_dispatch().record(input_tokens=5)
        raise error

    with pytest.raises(QuotaError) as info:
        agent()
    assert info.value is error and info.value.__traceback__ is not None
    completed = lines(cap)[1]
    assert completed["success"] is False and completed["error_type"] == "QuotaError"
    assert completed["error"].startswith("quota exceeded") and len(completed["error"]) < MAX_ERROR_CHARS + 40
    assert completed["input_tokens"] == 5
    (span,) = cap.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == completed["error"]
    assert span.attributes is not None and span.attributes["error.type"] == "QuotaError"
    assert [e.name for e in span.events] == ["exception"]


def test_record_a_failure_without_an_exception(cap: Capture) -> None:
    with spanjournal.dispatch_span("c-1") as d:
        d.record(error="429: quota exceeded, try later", error_type="QuotaMessage", tokens_used=12)
    with spanjournal.dispatch_span("c-2") as d:
        d.record(success=False)
    with spanjournal.dispatch_span("c-3") as d:
        d.record(success=False, error="first")
        d.record(success=True, error_type="Ignored", output_file=Path("out.json"))
    c1, c2, c3 = (e for e in lines(cap) if e["event"] == "subagent_completed")
    assert c1 == {**c1, "success": False, "error": "429: quota exceeded, try later", "error_type": "QuotaMessage"}
    assert c1["tokens_used"] == 12
    assert c2["success"] is False and "error" not in c2
    assert c3["success"] is True and "error" not in c3 and "error_type" not in c3
    assert c3["output_file"] == "out.json"
    spans = {s.attributes["spanjournal.chunk_id"]: s for s in cap.spans() if s.attributes}
    assert spans["c-1"].status.status_code is StatusCode.ERROR
    assert spans["c-1"].attributes is not None and spans["c-1"].attributes["error.type"] == "QuotaMessage"
    assert spans["c-3"].status.status_code is StatusCode.UNSET
    assert spans["c-3"].attributes is not None and "error.type" not in spans["c-3"].attributes


def test_record_after_the_end_is_ignored(cap: Capture, caplog: pytest.LogCaptureFixture) -> None:
    with spanjournal.dispatch_span("c-1") as d:
        pass
    d.record(success=False)
    assert "after it ended" in caplog.text
    assert lines(cap)[1]["success"] is True


def test_current_dispatch_is_the_running_dispatch(cap: Capture) -> None:
    with pytest.raises(LookupError, match="outside a dispatch"):
        spanjournal.current_dispatch()
    seen: list[spanjournal.DispatchHandle] = []

    @spanjournal.dispatch(chunk_id=lambda n: f"c-{n}")
    def agent(n: int) -> None:
        seen.append(spanjournal.current_dispatch())

    agent(1)
    (handle,) = seen
    dispatched = lines(cap)[0]
    assert handle.chunk_id == "c-1" and handle.journaled
    assert (handle.trace_id, handle.span_id) == (dispatched["trace_id"], dispatched["span_id"])
    with pytest.raises(LookupError):
        spanjournal.current_dispatch()


def test_current_dispatch_is_per_thread(cap: Capture) -> None:
    barrier = threading.Barrier(8)
    wrong: list[str] = []

    @spanjournal.dispatch(chunk_id=lambda n: f"c-{n}")
    def agent(n: int) -> None:
        barrier.wait(timeout=10)
        if spanjournal.current_dispatch().chunk_id != f"c-{n}":
            wrong.append(f"c-{n}")
        spanjournal.current_dispatch().record(tokens_used=n)

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert wrong == []
    completed = {e["chunk_id"]: e["tokens_used"] for e in lines(cap) if e["event"] == "subagent_completed"}
    assert completed == {f"c-{n}": n for n in range(8)}


def test_nested_dispatches_record_the_parent_span(cap: Capture) -> None:
    @spanjournal.dispatch(chunk_id=lambda n: f"child-{n}")
    def child(n: int) -> None:
        pass

    @spanjournal.dispatch("parent")
    def parent() -> None:
        child(1)
        with trace.get_tracer("user").start_as_current_span("user span"):
            child(2)

    parent()
    by_chunk = {e["chunk_id"]: e for e in lines(cap) if e["event"] == "subagent_dispatched"}
    spans = {s.name: s for s in cap.spans()}
    assert "parent_span_id" not in by_chunk["parent"]
    assert by_chunk["child-1"]["parent_span_id"] == by_chunk["parent"]["span_id"]
    assert by_chunk["child-1"]["trace_id"] == by_chunk["parent"]["trace_id"]
    assert "user span" not in spans or by_chunk["child-2"]["trace_id"] == by_chunk["parent"]["trace_id"]
    events = [(e["event"], e["chunk_id"]) for e in lines(cap)]
    assert events.index(("subagent_dispatched", "parent")) < events.index(("subagent_dispatched", "child-1"))
    assert events[-1] == ("subagent_completed", "parent")


def test_sampled_out_dispatches_are_journaled_by_the_decorator() -> None:
    with capture(sampler=ALWAYS_OFF) as c:

        @spanjournal.dispatch(chunk_id=lambda n: f"c-{n}", task_description="t")
        def agent(n: int) -> None:
            spanjournal.current_dispatch().record(output_tokens=7)
            if n == 2:
                raise RuntimeError("boom")
            if n == 1:
                agent(3)

        agent(1)
        with pytest.raises(RuntimeError):
            agent(2)
        assert c.spans() == []
        events = lines(c)
    assert [(e["event"], e["chunk_id"]) for e in events] == [
        ("subagent_dispatched", "c-1"),
        ("subagent_dispatched", "c-3"),
        ("subagent_completed", "c-3"),
        ("subagent_completed", "c-1"),
        ("subagent_dispatched", "c-2"),
        ("subagent_completed", "c-2"),
    ]
    d1, d3 = events[0], events[1]
    assert d3["parent_span_id"] == d1["span_id"] and d3["trace_id"] == d1["trace_id"]
    assert all(e["session_id"] == "test-session" for e in events)
    assert events[2]["span_id"] == d3["span_id"] and events[2]["output_tokens"] == 7
    assert events[5]["success"] is False and events[5]["error_type"] == "RuntimeError"
    assert events[0]["task_description"] == "t" and events[0]["service_name"] == "spanjournal-test"
    assert int(d1["trace_id"], 16) and int(d1["span_id"], 16)


def test_ratio_sampling_never_changes_what_is_journaled() -> None:
    with capture(sampler=ParentBased(TraceIdRatioBased(0.5))) as c:

        @spanjournal.dispatch(chunk_id=lambda n: f"c-{n}")
        def agent(n: int) -> None:
            pass

        for n in range(60):
            agent(n)
        exported = {f"{s.context.span_id:016x}" for s in c.spans()}
        ledger = c.ledger()
    assert 0 < len(exported) < 60
    assert ledger.pending() == [] and len(ledger) == 60
    assert all(ledger[f"c-{n}"].success is not None for n in range(60))


def test_disabled_sdk_still_journals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with capture() as c:
        with spanjournal.dispatch_span("c-1") as d:
            assert not d.span.is_recording()
        events = lines(c)
    assert [e["event"] for e in events] == ["subagent_dispatched", "subagent_completed"]
    assert events[0]["span_id"] == events[1]["span_id"] != "0" * 16


def test_a_users_own_provider_with_the_processor_needs_no_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    journal = MemoryJournal()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(JournalSpanProcessor(journal, session_id="mine"))
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    previous = sj_config._activate(None)
    try:
        with spanjournal.dispatch_span("c-1"):
            pass
    finally:
        sj_config._activate(previous)
        provider.shutdown()
    assert [(type(e).__name__, getattr(e, "session_id", None)) for e in journal.events()] == [
        ("Dispatched", "mine"),
        ("Completed", "mine"),
    ]


def test_no_journal_configured(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(instrument, "latest_processor", lambda: None)
    previous = sj_config._activate(None)
    ran = []
    try:

        @spanjournal.dispatch("c-1")
        def strict() -> None:
            ran.append("strict")

        @spanjournal.dispatch("c-2", strict=False)
        def lenient() -> None:
            ran.append("lenient")

        with pytest.raises(JournalWriteError, match="no journal configured"):
            strict()
        lenient()
        lenient()
    finally:
        sj_config._activate(previous)
    assert ran == ["lenient", "lenient"]
    assert caplog.text.count("run unjournaled") == 1


# -- strict and lenient, with a journal that fails on write -------------------------


@pytest.fixture(params=["memory", "dev-full"])
def failing_journal(request: pytest.FixtureRequest) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryJournal(fail_after=0)
        return
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    journal = Journal("/dev/full", durability="flush")  # every write fails with ENOSPC
    yield journal
    journal.close()


def test_strict_raises_before_the_body_runs(failing_journal: Any) -> None:
    body_ran = threading.Event()
    with capture(journal=None) as c:
        sj = sj_config.build(failing_journal, exporter=c.exporter, set_global=False, session_id="s")
        sj_config._activate(sj)

        @spanjournal.dispatch("c-1")
        def agent() -> None:
            body_ran.set()

        with pytest.raises(JournalWriteError) as info:
            agent()
        assert not body_ran.is_set(), "the body must not run when its dispatch is not durable"
        assert info.value.errno == 28 and "c-1" in str(info.value)
        assert isinstance(info.value.__cause__, OSError)
        with pytest.raises(JournalWriteError), spanjournal.dispatch_span("c-2"):
            body_ran.set()
        assert not body_ran.is_set()
        assert sj.errors >= 2
        sj.force_flush()
        refused = c.exporter.get_finished_spans()
        sj.shutdown()
    assert [s.status.status_code for s in refused] == [StatusCode.ERROR, StatusCode.ERROR]
    assert all("dispatch refused" in (s.status.description or "") for s in refused)


def test_lenient_runs_the_body_and_counts_the_failure(failing_journal: Any, caplog: pytest.LogCaptureFixture) -> None:
    ran = []
    sj = sj_config.build(failing_journal, exporter="none", set_global=False)
    previous = sj_config._activate(sj)
    try:

        @spanjournal.dispatch(chunk_id=lambda n: f"c-{n}", strict=False)
        def agent(n: int) -> int:
            ran.append(n)
            return n * 2

        assert [agent(n) for n in range(3)] == [0, 2, 4]
    finally:
        sj.shutdown()
        sj_config._activate(previous)
    assert ran == [0, 1, 2]
    assert sj.errors == 6  # three dispatched, three completed
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


def test_a_failure_at_completion_never_raises() -> None:
    with capture(journal=MemoryJournal(fail_after=1)) as c:

        @spanjournal.dispatch("c-1")
        def agent() -> str:
            return "answer"

        assert agent() == "answer"
        assert c.spanjournal.errors == 1
        assert [type(e).__name__ for e in c.journal.events()] == ["Dispatched"]


# -- the context manager ----------------------------------------------------------------


def test_dispatch_span_sync_and_async(cap: Capture) -> None:
    import asyncio

    with spanjournal.dispatch_span("c-1", task_description="t", items_assigned=2, agent_name="a") as d:
        assert spanjournal.current_dispatch() is d

    async def main() -> None:
        async with spanjournal.dispatch_span("c-2") as d2:
            assert spanjournal.current_dispatch() is d2

    asyncio.run(main())
    events = [(e["event"], e["chunk_id"]) for e in lines(cap)]
    assert events == [
        ("subagent_dispatched", "c-1"),
        ("subagent_completed", "c-1"),
        ("subagent_dispatched", "c-2"),
        ("subagent_completed", "c-2"),
    ]
    assert cap.spans()[0].name == "invoke_agent a"
    assert lines(cap)[0]["items_assigned"] == 2


def test_dispatch_span_misuse() -> None:
    with pytest.raises(TypeError, match="must be a value here"):
        spanjournal.dispatch_span("c-1", output_file=lambda: "x")  # type: ignore[arg-type]
    with capture():
        span = spanjournal.dispatch_span("c-1")
        with span:
            pass
        with pytest.raises(RuntimeError, match="entered once"), span:
            pass


def test_exception_in_dispatch_span_is_recorded_and_propagates(cap: Capture) -> None:
    with pytest.raises(KeyError), spanjournal.dispatch_span("c-1"):
        raise KeyError("missing")
    completed = lines(cap)[1]
    assert completed["success"] is False and completed["error_type"] == "KeyError"


def test_async_decorator_keeps_coroutine_function_nature() -> None:
    @spanjournal.dispatch("c")
    async def agent() -> int:
        return 1

    assert inspect.iscoroutinefunction(agent)


def test_dispatch_events_decode_with_the_schema(cap: Capture) -> None:
    with spanjournal.dispatch_span("c-1", output_file="o.json", batch="b"):
        pass
    dispatched, _completed = cap.journal.events()
    assert isinstance(dispatched, Dispatched)
    assert (dispatched.output_file, dispatched.batch, dispatched.session_id) == ("o.json", "b", "test-session")
    assert dispatched.pid == os.getpid()


def test_spans_and_readable_attributes_agree(cap: Capture) -> None:
    with spanjournal.dispatch_span("c-1") as d:
        d.record(input_tokens=3, output_tokens=4, attributes={"app.note": "n"})
    (span,) = cap.spans()
    assert isinstance(span, ReadableSpan)
    assert span.attributes is not None
    assert span.attributes["gen_ai.usage.input_tokens"] == 3 and span.attributes["app.note"] == "n"


@pytest.mark.parametrize("bad", ["case\n2", "case\r", "a\0b", "tab\there", "esc\x1b[31m", "del\x7f", "nel\x85"])
def test_chunk_ids_with_control_characters_are_refused_naming_the_id(bad: str) -> None:
    expected = f"chunk_id {bad!r} contains a control character"
    with pytest.raises(ValueError) as constant:
        spanjournal.dispatch(bad)
    assert expected in str(constant.value)

    ran = []

    @spanjournal.dispatch(chunk_id=lambda x: bad)
    def body(x: int) -> None:
        ran.append(x)

    with capture() as c, pytest.raises(ValueError) as dynamic:
        body(1)
    assert expected in str(dynamic.value)
    with capture() as c2, pytest.raises(ValueError) as context_manager, spanjournal.dispatch_span(bad):
        ran.append(2)
    assert expected in str(context_manager.value)
    assert ran == [] and c.journal.lines == [] and c2.journal.lines == []
