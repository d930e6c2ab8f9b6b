"""Agent spans of other instrumentations as journaled units: which spans, which ids, and sampling."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode

import spanjournal
from spanjournal import AgentSpans, JournalSampler, JournalWriteError, config, semconv
from spanjournal._schema import Completed, Dispatched
from spanjournal.agent_spans import input_chunk_id
from spanjournal.processor import JournalSpanProcessor
from spanjournal.testing import MemoryJournal

#: What the official OpenAI Agents instrumentation puts on an agent span at start.
PLACEHOLDER = {
    semconv.GEN_AI_OPERATION_NAME: "invoke_agent",
    semconv.GEN_AI_AGENT_NAME: "OpenAI Agent",
    "gen_ai.agent.id": "openai_agent",
    "gen_ai.provider.name": "openai",
}


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("OTEL_", "SPANJOURNAL_")):
            monkeypatch.delenv(name)
    monkeypatch.setattr(otel_trace, "set_tracer_provider", lambda provider: None)
    previous = config._activate(None)
    yield
    current = config.current()
    if current is not None:
        current.shutdown()
    config._activate(previous)


class Run:
    """A configured spanjournal with agent spans on, a memory journal and an in-memory exporter."""

    def __init__(self, policy: AgentSpans | None = None, **kwargs: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.sj = spanjournal.configure(
            journal=MemoryJournal(),
            agent_spans=policy or AgentSpans(),
            exporter="none",
            set_global=False,
            **kwargs,
        )
        # Export synchronously so that the test sees what the sampler let through.
        self.sj.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.sj.tracer

    @property
    def journal(self) -> MemoryJournal:
        assert isinstance(self.sj.journal, MemoryJournal)
        return self.sj.journal

    def dispatched(self) -> list[Dispatched]:
        return [e for e in self.journal.events() if isinstance(e, Dispatched)]

    def completed(self) -> list[Completed]:
        return [e for e in self.journal.events() if isinstance(e, Completed)]

    def agent(self, name: str, **attributes: Any) -> Any:
        """An agent span as the OpenAI Agents instrumentation starts it."""
        return self.tracer.start_as_current_span(
            f"invoke_agent {name}", kind=SpanKind.CLIENT, attributes={**PLACEHOLDER, **attributes}
        )

    def orchestrate(self, workers: int = 3) -> None:
        """A run: its root span, an orchestrator, and sub-agents called as tools."""
        root = {semconv.GEN_AI_OPERATION_NAME: "invoke_agent", "gen_ai.provider.name": "openai"}
        with (
            self.tracer.start_as_current_span("Agent workflow", kind=SpanKind.SERVER, attributes=root),
            self.agent("orchestrator"),
        ):
            for _ in range(workers):
                with self.tracer.start_as_current_span("execute_tool research"), self.agent("researcher"):
                    pass


def test_units_by_span_name_with_the_real_agent_name_and_no_chunk_for_the_runs_root() -> None:
    run = Run()
    run.orchestrate()
    dispatched = run.dispatched()
    assert [d.chunk_id for d in dispatched] == [
        "orchestrator#1",
        "orchestrator#1/researcher#1",
        "orchestrator#1/researcher#2",
        "orchestrator#1/researcher#3",
    ]
    assert [d.agent for d in dispatched] == ["orchestrator", "researcher", "researcher", "researcher"]
    assert [c.chunk_id for c in run.completed()] == [d.chunk_id for d in dispatched[1:]] + ["orchestrator#1"]
    spans = {s.context.span_id: s for s in run.exporter.get_finished_spans()}
    orchestrator = dispatched[0]
    assert orchestrator.parent_span_id is None, "its parent (the run's root) is not journaled"
    assert {d.parent_span_id for d in dispatched[1:]} == {orchestrator.span_id}
    assert spans[int(orchestrator.span_id or "", 16)].name == "invoke_agent orchestrator"
    assert dispatched[1].attrs == {"gen_ai.agent.id": "openai_agent", "gen_ai.provider.name": "openai"}


def test_the_same_run_again_gives_the_same_ids_and_distinct_runs_in_one_process_do_not_merge() -> None:
    first = Run()
    first.orchestrate()
    first_ids = [d.chunk_id for d in first.dispatched()]
    second = Run()  # a new configuration: as in the process that runs it again after a crash
    second.orchestrate()
    assert first_ids == [d.chunk_id for d in second.dispatched()]
    second.orchestrate(workers=1)  # another run of the same orchestrator in the same process: another unit
    assert [d.chunk_id for d in second.dispatched()][4:] == ["orchestrator#2", "orchestrator#2/researcher#1"]


def test_attribute_only_agent_spans_and_spans_that_are_not_agents() -> None:
    run = Run()
    with run.tracer.start_as_current_span(
        "my agent span", attributes={semconv.GEN_AI_OPERATION_NAME: "invoke_agent", semconv.GEN_AI_AGENT_NAME: "critic"}
    ):
        pass
    with run.tracer.start_as_current_span("chat gpt-x", attributes={semconv.GEN_AI_OPERATION_NAME: "chat"}):
        pass
    with run.tracer.start_as_current_span("invoke_agent"):  # names no agent
        pass
    # An invoke_agent attribute set only after start is not seen at start: no orphan completion.
    with run.tracer.start_as_current_span("late") as span:
        span.set_attribute(semconv.GEN_AI_OPERATION_NAME, semconv.INVOKE_AGENT)
    assert [(type(e).__name__, e.chunk_id) for e in run.journal.events()] == [
        ("Dispatched", "critic#1"),
        ("Completed", "critic#1"),
    ]


def test_a_dispatch_around_a_run_is_one_unit_and_sub_agents_inside_are_its_children() -> None:
    run = Run()

    @spanjournal.dispatch(chunk_id=lambda topic: f"review-{topic}")
    def review(topic: str) -> None:
        run.orchestrate(workers=2)

    review("gpu")
    dispatched = run.dispatched()
    assert [d.chunk_id for d in dispatched] == ["review-gpu", "review-gpu/researcher#1", "review-gpu/researcher#2"]
    assert dispatched[0].agent == "review"
    assert {d.parent_span_id for d in dispatched[1:]} == {dispatched[0].span_id}
    assert sorted(c.chunk_id for c in run.completed()) == sorted(d.chunk_id for d in dispatched)


def test_an_explicit_id_attribute_is_used_unless_it_does_not_identify_the_unit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    run = Run(AgentSpans(id_attributes=("gen_ai.agent.id",)))
    with run.agent("researcher", **{"gen_ai.agent.id": "lit-review-7"}):
        pass
    assert [d.chunk_id for d in run.dispatched()] == ["lit-review-7"]
    # The same "id" on four agents in flight at once (the instrumentation's constant): four units, not one.
    with caplog.at_level(logging.WARNING, logger="spanjournal"):
        spans = [run.tracer.start_span("invoke_agent researcher", attributes=PLACEHOLDER) for _ in range(4)]
        for span in spans:
            span.end()
    ids = [d.chunk_id for d in run.dispatched()[1:]]
    assert len(set(ids)) == 4, ids
    assert ids[0] == "openai_agent" and ids[1:] == ["researcher#1", "researcher#2", "researcher#3"]
    assert "does not identify a unit" in caplog.text


def test_an_input_at_start_makes_the_id_and_repeats_get_numbered() -> None:
    run = Run()
    for prompt in ('{"q": "gpu prices", "n": 3}', '{"n":3,"q":"gpu prices"}', "other  question"):
        with run.agent("researcher", **{"gen_ai.input.messages": prompt}):
            pass
    base = input_chunk_id("researcher", '{"q":"gpu prices","n":3}')
    assert [d.chunk_id for d in run.dispatched()] == [base, f"{base}#2", input_chunk_id("researcher", "other question")]
    assert base.startswith("researcher-") and len(base) == len("researcher-") + 16


def test_a_chunk_id_policy_and_a_match_policy() -> None:
    def match(name: str, attributes: Any) -> str | None:
        return name.removeprefix("execute_task ") if name.startswith("execute_task research") else None

    run = Run(AgentSpans(match=match, chunk_id=lambda s: f"{s.agent}-{s.ordinal:02d}" if s.ordinal < 2 else None))
    for _ in range(2):
        with run.tracer.start_as_current_span("execute_task research"):
            pass
    with run.tracer.start_as_current_span("execute_task write"):
        pass
    assert [d.chunk_id for d in run.dispatched()] == ["research-01", "research#2"]


def test_failures_and_tokens_of_agent_units() -> None:
    run = Run()
    with run.agent("researcher") as span:
        span.set_attributes({semconv.GEN_AI_INPUT_TOKENS: 100, semconv.GEN_AI_OUTPUT_TOKENS: 20})
        span.set_attribute(semconv.ERROR_TYPE, "RateLimitError")
        span.set_status(Status(StatusCode.ERROR, "429 quota exceeded"))
    (done,) = run.completed()
    assert (done.success, done.error, done.error_type) == (False, "429 quota exceeded", "RateLimitError")
    assert (done.input_tokens, done.output_tokens) == (100, 20)


# -- sampling never hides a unit ---------------------------------------------------------


@pytest.mark.parametrize(("sampler", "arg"), [("always_off", None), ("traceidratio", "0.5")])
def test_sampler_from_the_environment_never_hides_a_unit(
    monkeypatch: pytest.MonkeyPatch, sampler: str, arg: str | None
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    if arg is not None:
        monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", arg)
    run = Run()

    @spanjournal.dispatch(chunk_id=lambda n: f"case-{n}")
    def case(n: int) -> None:
        pass

    for n in range(40):
        with run.agent("researcher"):
            pass
        case(n)
    assert len(run.dispatched()) == len(run.completed()) == 80
    assert run.sj.processor.errors == 0
    exported = len(run.exporter.get_finished_spans())
    if sampler == "always_off":
        assert exported == 0, "export follows the sampler"
    else:
        assert 0 < exported < 80, "export follows the sampler"


def test_sampler_records_the_spans_inside_a_dropped_unit_so_nesting_is_kept() -> None:
    run = Run(sampler=ALWAYS_OFF)
    run.orchestrate(workers=2)
    assert [d.chunk_id for d in run.dispatched()] == [
        "orchestrator#1",
        "orchestrator#1/researcher#1",
        "orchestrator#1/researcher#2",
    ]
    assert run.exporter.get_finished_spans() == ()


def test_journal_sampler_keeps_the_wrapped_decisions_to_sample() -> None:
    sampler = JournalSampler(TraceIdRatioBased(1.0), AgentSpans())
    result = sampler.should_sample(None, 123, "invoke_agent x", attributes={"a": 1})
    assert result.decision.is_sampled() and dict(result.attributes or {}) == {"a": 1}
    off = JournalSampler(JournalSampler(ALWAYS_OFF))  # no double wrapping; dispatch spans only
    assert off.sampler is ALWAYS_OFF
    assert not off.should_sample(None, 1, "invoke_agent x").decision.is_recording()
    kept = off.should_sample(None, 1, "x", attributes={semconv.CHUNK_ID: "c"})
    assert kept.decision.is_recording() and not kept.decision.is_sampled()
    assert dict(kept.attributes or {}) == {semconv.CHUNK_ID: "c"}
    assert "AlwaysOffSampler" in off.get_description()


# -- the start outcome crosses threads: ConcurrentMultiSpanProcessor ----------------------


def concurrent_provider() -> TracerProvider:
    return TracerProvider(active_span_processor=ConcurrentMultiSpanProcessor(num_threads=2), shutdown_on_exit=False)


def test_dispatches_are_journaled_once_with_the_concurrent_multi_span_processor() -> None:
    provider = concurrent_provider()
    sj = spanjournal.configure(journal=MemoryJournal(), tracer_provider=provider, exporter="none")

    @spanjournal.dispatch(chunk_id=lambda n: f"case-{n}")
    def case(n: int) -> None:
        pass

    threads = [threading.Thread(target=lambda t=t: [case(t * 100 + i) for i in range(20)]) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert isinstance(sj.journal, MemoryJournal)
    events = sj.journal.events()
    dispatched = [e.chunk_id for e in events if isinstance(e, Dispatched)]
    assert len(dispatched) == 80 and len(set(dispatched)) == 80, "each dispatch journaled exactly once"
    assert len([e for e in events if isinstance(e, Completed)]) == 80
    provider.shutdown()


class ExplodingJournal:
    def append_bytes(self, line: bytes) -> None:
        raise JournalWriteError(28, "No space left on device")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_strict_refusal_crosses_threads_with_the_concurrent_multi_span_processor() -> None:
    provider = concurrent_provider()
    spanjournal.configure(journal=ExplodingJournal(), tracer_provider=provider, exporter="none")
    ran = []

    @spanjournal.dispatch("case-1")
    def case() -> None:
        ran.append(1)

    with pytest.raises(JournalWriteError, match="No space left"):
        case()
    assert ran == []
    provider.shutdown()


def test_a_failing_journal_names_the_agent_units_chunk(caplog: pytest.LogCaptureFixture) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    processor = JournalSpanProcessor(ExplodingJournal(), agent_spans=AgentSpans())
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    with (
        caplog.at_level(logging.ERROR, logger="spanjournal"),
        tracer.start_as_current_span("invoke_agent researcher", attributes=PLACEHOLDER),
    ):
        pass
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "chunk 'researcher#1'" in record.getMessage() and "None" not in record.getMessage()
    assert processor.errors == 2  # dispatched and completed: counted, the agent was not stopped
