"""start_dispatch: a dispatch started in one callback and ended in another."""

from __future__ import annotations

import pytest
from opentelemetry import trace

import spanjournal
from spanjournal import JournalWriteError
from spanjournal.testing import MemoryJournal, capture


def test_start_and_end_write_the_same_events_as_dispatch_span_and_leave_the_callers_context_alone() -> None:
    with capture() as cap:
        before = trace.get_current_span()
        parent = spanjournal.start_dispatch("job-1", agent_name="planner", task_description="plan")
        child = spanjournal.start_dispatch("job-1/step-1", parent=parent, agent_name="worker")
        assert trace.get_current_span() is before
        with pytest.raises(LookupError):
            spanjournal.current_dispatch()
        child.end(input_tokens=100, output_tokens=20)
        child.end(success=False, error="ignored: already ended")
        parent.end(error=RuntimeError("quota exceeded"))
        assert child.ended and parent.ended
        dispatched = {d.chunk_id: d for d in cap.journal.dispatched()}
        assert dispatched["job-1/step-1"].parent_span_id == dispatched["job-1"].span_id
        assert (dispatched["job-1"].agent, dispatched["job-1"].task_description) == ("planner", "plan")
        completed = {c.chunk_id: c for c in cap.journal.completed()}
        assert len(cap.journal.completed()) == 2
        step = completed["job-1/step-1"]
        assert (step.success, step.input_tokens, step.output_tokens, step.tokens_used) == (True, 100, 20, 120)
        job = completed["job-1"]
        assert (job.success, job.error, job.error_type) == (False, "quota exceeded", "RuntimeError")
        spans = {s.name: s for s in cap.spans()}
        assert spans["invoke_agent worker"].parent is not None
        assert spans["invoke_agent worker"].parent.span_id == spans["invoke_agent planner"].context.span_id


def test_strict_start_raises_when_the_line_cannot_be_written_and_lenient_does_not() -> None:
    with capture(journal=MemoryJournal(fail_after=0)):
        with pytest.raises(JournalWriteError, match="job-1"):
            spanjournal.start_dispatch("job-1")
        lenient = spanjournal.start_dispatch("job-2", strict=False)
        assert not lenient.handle.journaled
        lenient.end()
