"""async def dispatches under asyncio: journal and spans agree, task by task."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
from opentelemetry.trace import StatusCode

import spanjournal
from spanjournal import ChunkState, Completed, Dispatched, Journal, read_ledger
from spanjournal.testing import capture


class AgentError(Exception):
    pass


def test_200_concurrent_async_dispatches_some_raising() -> None:
    def failing(n: int) -> bool:
        return n % 7 == 3

    with capture() as cap:

        @spanjournal.dispatch(chunk_id=lambda n: f"case-{n:03d}", task_description="route", agent_name="router")
        async def agent(n: int) -> int:
            handle = spanjournal.current_dispatch()
            await asyncio.sleep(0.001 * (n % 5))
            assert spanjournal.current_dispatch() is handle, "each task sees its own dispatch"
            handle.record(input_tokens=n, output_tokens=2 * n)
            await asyncio.sleep(0)
            if failing(n):
                raise AgentError(f"agent {n} failed")
            return n

        async def main() -> list[int | BaseException]:
            return list(await asyncio.gather(*(agent(n) for n in range(200)), return_exceptions=True))

        results = asyncio.run(main())
        spans = cap.spans()
        events = cap.journal.events()

    assert [isinstance(r, AgentError) for r in results] == [failing(n) for n in range(200)]
    assert [r for r in results if not isinstance(r, Exception)] == [n for n in range(200) if not failing(n)]

    dispatched = {e.span_id: e for e in events if isinstance(e, Dispatched)}
    completed = {e.span_id: e for e in events if isinstance(e, Completed)}
    assert len(dispatched) == len(completed) == len(spans) == 200
    for span in spans:
        span_id, trace_id = f"{span.context.span_id:016x}", f"{span.context.trace_id:032x}"
        start, end = dispatched[span_id], completed[span_id]
        assert span.attributes is not None
        n = int(str(span.attributes["spanjournal.chunk_id"]).removeprefix("case-"))
        assert start.chunk_id == end.chunk_id == f"case-{n:03d}"
        assert start.trace_id == end.trace_id == trace_id
        assert start.parent_span_id is None
        assert (end.input_tokens, end.output_tokens) == (n, 2 * n)
        assert span.attributes["gen_ai.usage.input_tokens"] == n
        if failing(n):
            assert span.status.status_code is StatusCode.ERROR
            assert end.success is False and end.error_type == "AgentError" and end.error == f"agent {n} failed"
        else:
            assert span.status.status_code is StatusCode.UNSET
            assert end.success is True and end.error is None
    ledger = cap.ledger()
    assert sorted(ledger.pending()) == [f"case-{n:03d}" for n in range(200) if failing(n)]


def test_tasks_started_inside_a_dispatch_are_its_children() -> None:
    with capture() as cap:

        @spanjournal.dispatch(chunk_id=lambda n: f"sub-{n}")
        async def sub_agent(n: int) -> int:
            await asyncio.sleep(0)
            return n

        @spanjournal.dispatch("orchestrator")
        async def orchestrator() -> list[int]:
            return list(await asyncio.gather(*(sub_agent(n) for n in range(5))))

        assert asyncio.run(orchestrator()) == [0, 1, 2, 3, 4]
        lines = [msgspec.json.decode(line) for line in cap.journal.lines]
    parent = next(e for e in lines if e["chunk_id"] == "orchestrator")
    children = [e for e in lines if e["event"] == "subagent_dispatched" and e["chunk_id"].startswith("sub-")]
    assert len(children) == 5
    assert {c["parent_span_id"] for c in children} == {parent["span_id"]}
    assert {c["trace_id"] for c in children} == {parent["trace_id"]}


def test_cancelled_dispatch_is_recorded_as_failed_and_the_cancellation_propagates() -> None:
    with capture() as cap:

        @spanjournal.dispatch("slow")
        async def slow(ready: asyncio.Event) -> None:
            ready.set()
            await asyncio.sleep(30)

        async def main() -> None:
            ready = asyncio.Event()
            task = asyncio.create_task(slow(ready))
            await asyncio.wait_for(ready.wait(), timeout=5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        (completion,) = cap.journal.completed()
    assert completion.success is False and completion.error_type == "CancelledError"


def test_async_dispatches_on_a_real_journal_file(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    journal = Journal(path, durability="flush")
    with capture() as cap:
        from spanjournal import config

        sj = config.build(journal, exporter=cap.exporter, set_global=False, session_id="async-file")
        config._activate(sj)

        @spanjournal.dispatch(chunk_id=lambda n: f"c-{n}")
        async def agent(n: int) -> None:
            await asyncio.sleep(0.001)
            if n == 13:
                raise AgentError("unlucky")

        async def main() -> None:
            await asyncio.gather(*(agent(n) for n in range(50)), return_exceptions=True)

        asyncio.run(main())
        sj.shutdown()
    journal.close()
    ledger = read_ledger(path)
    assert not ledger.issues
    assert ledger.counts()[ChunkState.DONE] == 49 and ledger.pending() == ["c-13"]
    assert "async-file" in ledger.sessions
