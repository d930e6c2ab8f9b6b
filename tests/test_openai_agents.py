"""The OpenAI Agents SDK integration, with the real ``openai-agents`` package driven by scripted models.

No network, no key: every agent's model is a :class:`ScriptedModel` (a
``Model`` subclass) that answers from a function of its input.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("agents")

from agents import Agent, ModelSettings, RunConfig, Runner, Usage
from agents.exceptions import UserError
from agents.items import ModelResponse
from agents.models.interface import Model
from agents.testing import assistant_message, function_call

import spanjournal
from spanjournal import ChunkState, JournalWriteError, read_ledger
from spanjournal.integrations.openai_agents import unit_chunk_id
from spanjournal.testing import MemoryJournal, capture, run_and_kill

SUB_AGENTS = ["pricing", "security", "support", "roadmap", "legal", "uptime"]
SLOW = {"security", "legal", "uptime"}
ORCHESTRATOR_ID = "vendor-survey-1"
INPUT_TOKENS, OUTPUT_TOKENS = 120, 30


class ScriptedModel(Model):
    """A model that answers with ``answer(input)``; counts its calls."""

    def __init__(self, answer: Callable[[Any], Any]) -> None:
        self.answer = answer
        self.calls = 0

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        self.calls += 1
        output = self.answer(input)
        if asyncio.iscoroutine(output):
            output = await output
        usage = Usage(requests=1, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, total_tokens=150)
        return ModelResponse(output=output, usage=usage, response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the tests run agents without streaming")


def tool_outputs(items: Any) -> list[Any]:
    return [i for i in items if isinstance(i, dict) and i.get("type") == "function_call_output"]


def question(name: str) -> str:
    return f"Assess vendor Acme on {name}"


def orchestrator(sub_agents: list[Agent[Any]], hooks: Any) -> Agent[Any]:
    """An agent whose first answer calls every sub-agent as a tool (in parallel); then it sums up."""

    def answer(items: Any) -> Any:
        if tool_outputs(items):
            return [assistant_message("survey done")]
        return [
            function_call(f"ask_{a.name}", {"input": question(a.name)}, call_id=f"call-{a.name}") for a in sub_agents
        ]

    tools = [a.as_tool(f"ask_{a.name}", f"Ask the {a.name} analyst", hooks=hooks) for a in sub_agents]
    return Agent(
        name="orchestrator",
        model=ScriptedModel(answer),
        tools=tools,
        model_settings=ModelSettings(parallel_tool_calls=True),
    )


def run_survey(journal: str, release: str) -> None:
    """A child process: the orchestrator asks six analysts; the slow three wait until ``release`` exists."""

    async def wait_for_release() -> list[Any]:
        while not os.path.exists(release):
            await asyncio.sleep(0.01)
        return [assistant_message("slow answer")]

    def analyst(name: str) -> Agent[Any]:
        if name in SLOW:
            return Agent(name=name, model=ScriptedModel(lambda _: wait_for_release()))
        return Agent(name=name, model=ScriptedModel(lambda _: [assistant_message("fast answer")]))

    spanjournal.configure(journal=journal, exporter="none", service_name="vendor-survey")
    hooks = spanjournal.instrument_openai_agents()
    agent = orchestrator([analyst(n) for n in SUB_AGENTS], hooks)
    config = RunConfig(trace_metadata={"spanjournal.chunk_id": ORCHESTRATOR_ID}, group_id="survey")
    asyncio.run(Runner.run(agent, "Survey vendor Acme", hooks=hooks, run_config=config))


def expected_id(name: str) -> str:
    return f"{ORCHESTRATOR_ID}/{unit_chunk_id(name, question(name))}"


def completed_sub_agents(journal: Path, count: int) -> Callable[[], bool]:
    """Kill condition: ``count`` sub-agents completed and every sub-agent dispatched."""

    def condition() -> bool:
        try:
            events = [json.loads(line) for line in journal.read_bytes().splitlines() if line.endswith(b"}")]
        except FileNotFoundError:
            return False
        dispatched = [e for e in events if e["event"] == "subagent_dispatched" and "/" in e["chunk_id"]]
        completed = [e for e in events if e["event"] == "subagent_completed" and "/" in e["chunk_id"]]
        return len(dispatched) == len(SUB_AGENTS) and len(completed) >= count

    return condition


def pending_json(journal: Path) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "spanjournal.cli", "pending", "--json", str(journal)],
        capture_output=True,
        text=True,
        check=True,
    )
    result: list[dict[str, Any]] = json.loads(out.stdout)
    return result


@pytest.mark.integration
def test_sigkill_mid_survey_leaves_the_slow_sub_agents_pending_and_the_same_run_completes_them(
    tmp_path: Path,
) -> None:
    journal = tmp_path / "survey.jsonl"
    release = tmp_path / "release"
    run = run_and_kill(
        run_survey,
        (str(journal), str(release)),
        kill_when=completed_sub_agents(journal, 3),
        timeout=120,
        journal=journal,
    )
    assert run.killed and run.returncode == -9, run.output

    slow_ids = {expected_id(n) for n in SLOW}
    pending = pending_json(journal)
    by_id = {p["chunk_id"]: p for p in pending}
    # In flight when killed: the three slow analysts, and the orchestrator waiting for them.
    assert set(by_id) == slow_ids | {ORCHESTRATOR_ID}
    assert all(p["state"] == "unfinished" for p in pending)
    assert {by_id[i]["agent"] for i in slow_ids} == SLOW
    assert by_id[ORCHESTRATOR_ID]["agent"] == "orchestrator"
    ledger = read_ledger(journal)
    for name in set(SUB_AGENTS) - SLOW:
        chunk = ledger[expected_id(name)]
        assert chunk.state is ChunkState.DONE
        assert chunk.completion is not None
        assert (chunk.completion.input_tokens, chunk.completion.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)
    orchestrator_span = ledger[ORCHESTRATOR_ID].dispatch
    assert orchestrator_span is not None
    for name in SUB_AGENTS:
        dispatched = ledger[expected_id(name)].dispatch
        assert dispatched is not None and dispatched.agent == name
        assert dispatched.parent_span_id == orchestrator_span.span_id
        assert dispatched.task_description == question(name)

    release.touch()  # the slow dependency is back: the same run again
    again = run_and_kill(run_survey, (str(journal), str(release)), kill_after=110, timeout=120, journal=journal)
    assert not again.killed and again.returncode == 0, again.output
    assert pending_json(journal) == []
    ledger = read_ledger(journal)
    assert len(ledger) == len(SUB_AGENTS) + 1  # the same chunks, not new ones
    for name in SLOW:
        assert ledger[expected_id(name)].attempt_count == 2
    orchestrator_done = ledger[ORCHESTRATOR_ID].success
    assert orchestrator_done is not None
    # The orchestrator's own two model calls.
    assert (orchestrator_done.input_tokens, orchestrator_done.output_tokens) == (2 * INPUT_TOKENS, 2 * OUTPUT_TOKENS)


def test_a_model_error_is_a_failed_chunk_with_its_error() -> None:
    def flaky(items: Any) -> Any:
        if "legal" in json.dumps(items):
            raise RuntimeError("quota exceeded for model gpt-x")
        return [assistant_message("ok")]

    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        agents = [Agent(name=n, model=ScriptedModel(flaky)) for n in ("pricing", "legal")]
        result = asyncio.run(Runner.run(orchestrator(agents, hooks), "Survey", hooks=hooks))
        assert result.final_output == "survey done"  # the orchestrator got the tool error and went on
        ledger = cap.ledger()
        failed = ledger[f"{unit_chunk_id('orchestrator', 'Survey')}/{unit_chunk_id('legal', question('legal'))}"]
        assert failed.state is ChunkState.FAILED
        assert failed.last_error is not None and "quota exceeded for model gpt-x" in failed.last_error
        assert ledger.pending() == [failed.chunk_id]

        alone = Agent(name="legal", model=ScriptedModel(flaky))
        with pytest.raises(RuntimeError, match="quota exceeded"):
            asyncio.run(Runner.run(alone, "legal review", hooks=hooks))
        top = cap.ledger()[unit_chunk_id("legal", "legal review")]
        assert top.state is ChunkState.FAILED
        assert top.last_error is not None and "quota exceeded for model gpt-x" in top.last_error


def test_ids_are_stable_per_question_and_distinct_per_unit() -> None:
    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        agent = Agent(name="pricing", model=ScriptedModel(lambda _: [assistant_message("ok")]))
        for text in ("price of A", "price of B", "price of A"):
            asyncio.run(Runner.run(agent, text, hooks=hooks))
        ids = [e.chunk_id for e in cap.journal.dispatched()]
        assert ids == [unit_chunk_id("pricing", t) for t in ("price of A", "price of B", "price of A")]
        assert ids[0] == ids[2] != ids[1]
        assert cap.ledger()[ids[0]].attempt_count == 2
        spans = {e.span_id for e in cap.journal.dispatched()}
        assert len(spans) == 3 and not spans & set(ids)


def test_strict_stops_the_run_before_its_model_is_called() -> None:
    model = ScriptedModel(lambda _: [assistant_message("ok")])
    agent = Agent(name="pricing", model=model)
    with capture(journal=MemoryJournal(fail_after=0)):
        hooks = spanjournal.instrument_openai_agents()
        with pytest.raises(JournalWriteError, match="pricing"):
            asyncio.run(Runner.run(agent, "price of A", hooks=hooks))
    assert model.calls == 0


def test_strict_stops_a_sub_agent_before_its_model_is_called_and_the_orchestrator_sees_a_tool_error() -> None:
    sub_model = ScriptedModel(lambda _: [assistant_message("ok")])
    with capture(journal=MemoryJournal(fail_after=1)) as cap:  # the orchestrator's line fits, no more
        hooks = spanjournal.instrument_openai_agents()
        result = asyncio.run(
            Runner.run(orchestrator([Agent(name="pricing", model=sub_model)], hooks), "Survey", hooks=hooks)
        )
        assert [e.chunk_id for e in cap.journal.dispatched()] == [unit_chunk_id("orchestrator", "Survey")]
    assert sub_model.calls == 0
    assert result.final_output == "survey done"


def test_lenient_runs_the_agent_when_its_line_cannot_be_written() -> None:
    model = ScriptedModel(lambda _: [assistant_message("ok")])
    with capture(journal=MemoryJournal(fail_after=0)) as cap:
        hooks = spanjournal.instrument_openai_agents(strict=False)
        asyncio.run(Runner.run(Agent(name="pricing", model=model), "price of A", hooks=hooks))
        assert cap.spanjournal.errors >= 1
    assert model.calls == 1


def test_an_explicit_id_in_the_trace_metadata_names_the_run() -> None:
    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        agent = Agent(name="pricing", model=ScriptedModel(lambda _: [assistant_message("ok")]))
        config = RunConfig(trace_metadata={"spanjournal.chunk_id": "case-007"}, group_id="bench-3")
        asyncio.run(Runner.run(agent, "price of A", hooks=hooks, run_config=config))
        (dispatched,) = cap.journal.dispatched()
        assert dispatched.chunk_id == "case-007"
        assert dispatched.attrs is not None and dispatched.attrs["openai_agents.group_id"] == "bench-3"


def test_strict_with_failure_error_function_none_stops_the_whole_run() -> None:
    orchestrator_model = ScriptedModel(
        lambda items: (
            [assistant_message("done")]
            if tool_outputs(items)
            else [function_call("ask_pricing", {"input": "price"}, call_id="c1")]
        )
    )
    sub_model = ScriptedModel(lambda _: [assistant_message("ok")])
    with capture(journal=MemoryJournal(fail_after=1)):
        hooks = spanjournal.instrument_openai_agents()
        pricing = Agent(name="pricing", model=sub_model)
        tool = pricing.as_tool("ask_pricing", "Ask", hooks=hooks, failure_error_function=None)
        agent = Agent(name="orchestrator", model=orchestrator_model, tools=[tool])
        with pytest.raises(UserError, match="ask_pricing") as raised:
            asyncio.run(Runner.run(agent, "Survey", hooks=hooks))
    assert isinstance(raised.value.__cause__, JournalWriteError)
    assert (orchestrator_model.calls, sub_model.calls) == (1, 0)


def test_with_the_sdks_tracing_disabled_strict_refuses_to_run_unjournaled() -> None:
    model = ScriptedModel(lambda _: [assistant_message("ok")])
    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        with pytest.raises(JournalWriteError, match="tracing disabled"):
            asyncio.run(
                Runner.run(
                    Agent(name="pricing", model=model), "q", hooks=hooks, run_config=RunConfig(tracing_disabled=True)
                )
            )
        assert cap.journal.dispatched() == []
    assert model.calls == 0


def test_import_spanjournal_does_not_import_the_agents_sdk() -> None:
    probe = (
        "import sys, spanjournal\n"
        "spanjournal.configure; spanjournal.dispatch; dir(spanjournal)\n"
        "assert 'agents' not in sys.modules, 'imported by spanjournal'\n"
        "spanjournal.instrument_openai_agents\n"
        "assert 'agents' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


def test_replacing_the_sdks_processors_keeps_journaling_with_hooks_trace_processor() -> None:
    from agents import set_trace_processors
    from agents.tracing.processors import default_processor

    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        set_trace_processors([hooks.trace_processor])
        try:
            agent = Agent(name="pricing", model=ScriptedModel(lambda _: [assistant_message("ok")]))
            asyncio.run(Runner.run(agent, "price of A", hooks=hooks))
        finally:  # as the SDK set them up, for the other tests
            set_trace_processors([default_processor(), hooks.trace_processor])
        assert [c.state for c in cap.ledger()] == [ChunkState.DONE]


def test_an_agent_tool_without_the_hooks_is_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        pricing = Agent(name="pricing-unhooked", model=ScriptedModel(lambda _: [assistant_message("ok")]))
        agent = Agent(
            name="orchestrator",
            model=ScriptedModel(
                lambda items: (
                    [assistant_message("done")]
                    if tool_outputs(items)
                    else [function_call("ask", {"input": "price"}, call_id="c1")]
                )
            ),
            tools=[pricing.as_tool("ask", "Ask")],  # no hooks=
        )
        asyncio.run(Runner.run(agent, "Survey", hooks=hooks))
        assert [d.agent for d in cap.journal.dispatched()] == ["orchestrator"]
    assert "'pricing-unhooked' ran inside unit" in caplog.text
    assert "pass hooks= to its as_tool()" in caplog.text


def test_a_handoff_makes_the_agent_handed_to_a_unit_of_its_own() -> None:
    billing = Agent(name="billing", model=ScriptedModel(lambda _: [assistant_message("refund issued")]))
    triage = Agent(
        name="triage",
        model=ScriptedModel(lambda _: [function_call("transfer_to_billing", {}, call_id="h1")]),
        handoffs=[billing],
    )
    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        config = RunConfig(trace_metadata={"spanjournal.chunk_id": "ticket-42"})
        result = asyncio.run(Runner.run(triage, "refund please", hooks=hooks, run_config=config))
        assert result.final_output == "refund issued"
        dispatched = cap.journal.dispatched()
        assert [(d.chunk_id, d.agent) for d in dispatched] == [
            ("ticket-42", "triage"),
            (f"ticket-42/{unit_chunk_id('billing', 'refund please')}", "billing"),
        ]
        assert dispatched[1].parent_span_id == dispatched[0].span_id
        ledger = cap.ledger()
        assert [c.state for c in ledger] == [ChunkState.DONE, ChunkState.DONE]
        assert ledger.pending() == []


def test_a_streamed_run_is_a_unit_too() -> None:
    from agents.testing import ModelStep
    from agents.testing import ScriptedModel as SDKScriptedModel

    usage = Usage(requests=1, input_tokens=INPUT_TOKENS, output_tokens=OUTPUT_TOKENS, total_tokens=150)
    model = SDKScriptedModel([ModelStep(output=[assistant_message("ok")], usage=usage)])

    async def stream() -> None:
        result = Runner.run_streamed(Agent(name="pricing", model=model), "price of A", hooks=hooks)
        async for _ in result.stream_events():
            pass

    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents()
        asyncio.run(stream())
        chunk = cap.ledger()[unit_chunk_id("pricing", "price of A")]
        assert chunk.state is ChunkState.DONE
        assert chunk.success is not None
        assert (chunk.success.input_tokens, chunk.success.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)


@pytest.mark.parametrize("strict", [True, False])
def test_a_failure_inside_the_hooks_is_a_strict_refusal_or_a_logged_error(
    strict: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from spanjournal.integrations import openai_agents

    def broken(name: str, agent_input: Any) -> str:
        raise KeyError("no such field")

    monkeypatch.setattr(openai_agents, "unit_chunk_id", broken)
    model = ScriptedModel(lambda _: [assistant_message("ok")])
    with capture() as cap:
        hooks = spanjournal.instrument_openai_agents(strict=strict)
        run = lambda: asyncio.run(Runner.run(Agent(name="pricing", model=model), "q", hooks=hooks))  # noqa: E731
        if strict:
            with pytest.raises(JournalWriteError, match="no such field"):
                run()
        else:
            run()
        assert cap.journal.dispatched() == []
    assert model.calls == (0 if strict else 1)
