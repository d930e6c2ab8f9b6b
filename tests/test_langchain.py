"""The LangChain / LangGraph callback handler, with the real packages and a fake chat model."""

from __future__ import annotations

import asyncio
import itertools
import json
import operator
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langgraph")

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

import spanjournal
from spanjournal import ChunkState, JournalWriteError, read_ledger
from spanjournal.langchain import JournalCallbackHandler, unit_chunk_id
from spanjournal.testing import MemoryJournal, capture, run_and_kill

TOPICS = ["pricing", "security", "support", "roadmap", "legal", "uptime"]
SLOW = {"security", "legal", "uptime"}
INPUT_TOKENS, OUTPUT_TOKENS = 50, 7


def fake_model() -> GenericFakeChatModel:
    usage = {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS, "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS}
    return GenericFakeChatModel(messages=itertools.repeat(AIMessage(content="findings", usage_metadata=usage)))


class State(TypedDict):
    topics: list[str]
    findings: Annotated[list[str], operator.add]


def research_graph(research: Callable[[dict[str, Any]], dict[str, Any]]) -> Any:
    """START fans ``research`` out with one ``Send`` per topic."""

    def fan_out(state: State) -> list[Send]:
        return [Send("research", {"topic": t}) for t in state["topics"]]

    graph = StateGraph(State)
    graph.add_node("research", research)
    graph.add_conditional_edges(START, fan_out, ["research"])
    graph.add_edge("research", END)
    return graph.compile()


def run_research(journal: str, release: str) -> None:
    """A child process: six research tasks; the slow three wait until ``release`` exists."""
    model = fake_model()

    def research(task: dict[str, Any]) -> dict[str, Any]:
        while task["topic"] in SLOW and not os.path.exists(release):
            time.sleep(0.01)
        reply = model.invoke(f"Research {task['topic']}")
        return {"findings": [f"{task['topic']}: {reply.content}"]}

    spanjournal.configure(journal=journal, exporter="none")
    handler = JournalCallbackHandler(nodes={"research"})
    graph = research_graph(research)
    graph.invoke({"topics": TOPICS, "findings": []}, config={"callbacks": [handler], "max_concurrency": 6})


def expected_id(topic: str) -> str:
    return unit_chunk_id("research", {"topic": topic})


def dispatched_and_completed(journal: Path, dispatched: int, completed: int) -> Callable[[], bool]:
    def condition() -> bool:
        try:
            events = [json.loads(line) for line in journal.read_bytes().splitlines() if line.endswith(b"}")]
        except FileNotFoundError:
            return False
        kinds = [e["event"] for e in events]
        return kinds.count("subagent_dispatched") == dispatched and kinds.count("subagent_completed") >= completed

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
def test_sigkill_mid_fan_out_leaves_the_slow_tasks_pending_and_the_same_run_completes_them(tmp_path: Path) -> None:
    journal = tmp_path / "research.jsonl"
    release = tmp_path / "release"
    run = run_and_kill(
        run_research,
        (str(journal), str(release)),
        kill_when=dispatched_and_completed(journal, len(TOPICS), 3),
        timeout=120,
        journal=journal,
    )
    assert run.killed and run.returncode == -9, run.output

    pending = pending_json(journal)
    assert {p["chunk_id"] for p in pending} == {expected_id(t) for t in SLOW}
    assert {(p["state"], p["agent"]) for p in pending} == {("unfinished", "research")}
    ledger = read_ledger(journal)
    for topic in set(TOPICS) - SLOW:
        done = ledger[expected_id(topic)].success
        assert done is not None and (done.input_tokens, done.output_tokens) == (INPUT_TOKENS, OUTPUT_TOKENS)

    release.touch()
    again = run_and_kill(run_research, (str(journal), str(release)), kill_after=110, timeout=120, journal=journal)
    assert not again.killed and again.returncode == 0, again.output
    assert pending_json(journal) == []
    ledger = read_ledger(journal)
    assert set(ledger.chunk_ids()) == {expected_id(t) for t in TOPICS}
    assert all(ledger[expected_id(t)].attempt_count == 2 for t in SLOW)


def test_a_failing_node_is_a_failed_chunk_with_its_error() -> None:
    def research(task: dict[str, Any]) -> dict[str, Any]:
        if task["topic"] == "legal":
            raise RuntimeError("model quota exceeded")
        return {"findings": [task["topic"]]}

    with capture() as cap:
        handler = JournalCallbackHandler(nodes={"research"})
        with pytest.raises(RuntimeError, match="model quota exceeded"):
            research_graph(research).invoke({"topics": ["pricing", "legal"], "findings": []}, {"callbacks": [handler]})
        chunk = cap.ledger()[expected_id("legal")]
        assert chunk.state is ChunkState.FAILED
        assert (chunk.last_error, chunk.error_type) == ("model quota exceeded", "RuntimeError")


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
def test_strict_stops_the_node_before_it_runs(mode: str) -> None:
    ran: list[str] = []

    def research(task: dict[str, Any]) -> dict[str, Any]:
        ran.append(task["topic"])
        return {"findings": [task["topic"]]}

    graph = research_graph(research)
    state = {"topics": ["pricing", "legal"], "findings": []}
    with capture(journal=MemoryJournal(fail_after=0)):
        config: Any = {"callbacks": [JournalCallbackHandler(nodes={"research"})]}
        with pytest.raises(JournalWriteError, match="research"):
            if mode == "invoke":
                graph.invoke(state, config)
            else:
                asyncio.run(graph.ainvoke(state, config))
    assert ran == []


def test_lenient_runs_the_node_when_its_line_cannot_be_written() -> None:
    ran: list[str] = []

    def research(task: dict[str, Any]) -> dict[str, Any]:
        ran.append(task["topic"])
        return {"findings": [task["topic"]]}

    with capture(journal=MemoryJournal(fail_after=0)) as cap:
        handler = JournalCallbackHandler(nodes={"research"}, strict=False)
        research_graph(research).invoke({"topics": ["pricing"], "findings": []}, {"callbacks": [handler]})
        assert cap.spanjournal.errors >= 1
    assert ran == ["pricing"]


def test_units_marked_by_metadata_nest_and_sum_their_own_model_tokens() -> None:
    model = fake_model()
    inner = RunnableLambda(lambda text: model.invoke(text).content, name="summarise")
    outer = RunnableLambda(lambda text: inner.invoke(text, {"metadata": {"spanjournal.unit": True}}), name="report")
    with capture() as cap:
        handler = JournalCallbackHandler()
        outer.invoke("Q3 numbers", {"callbacks": [handler], "metadata": {"spanjournal.chunk_id": "report-q3"}})
        outer.invoke("Q3 numbers", {"callbacks": [handler], "metadata": {"spanjournal.chunk_id": "report-q3"}})
        dispatched = cap.journal.dispatched()
        inner_id = f"report-q3/{unit_chunk_id('summarise', 'Q3 numbers')}"
        assert [d.chunk_id for d in dispatched] == ["report-q3", inner_id] * 2
        assert dispatched[1].parent_span_id == dispatched[0].span_id
        ledger = cap.ledger()
        assert ledger[inner_id].attempt_count == 2
        summarised = ledger[inner_id].success
        assert summarised is not None and (summarised.input_tokens, summarised.output_tokens) == (
            INPUT_TOKENS,
            OUTPUT_TOKENS,
        )
        report = ledger["report-q3"].success
        assert report is not None and report.input_tokens == 0  # the model ran in the inner unit


def test_a_chunk_id_function_names_the_units() -> None:
    with capture() as cap:
        handler = JournalCallbackHandler(nodes={"research"}, chunk_id=lambda name, task: f"{name}-{task['topic']}")
        research_graph(lambda task: {"findings": [task["topic"]]}).invoke(
            {"topics": ["pricing", "legal"], "findings": []}, {"callbacks": [handler]}
        )
        assert sorted(d.chunk_id for d in cap.journal.dispatched()) == ["research-legal", "research-pricing"]


def test_import_spanjournal_does_not_import_langchain() -> None:
    probe = (
        "import sys, spanjournal\n"
        "spanjournal.configure; spanjournal.dispatch; dir(spanjournal)\n"
        "assert not [m for m in sys.modules if m.startswith(('langchain', 'langgraph'))]\n"
        "import spanjournal.langchain\n"
        "assert 'langchain_core' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, timeout=60)


@pytest.mark.parametrize("strict", [True, False])
def test_a_failure_inside_the_handler_is_a_strict_refusal_or_a_logged_error(strict: bool) -> None:
    ran: list[str] = []

    def research(task: dict[str, Any]) -> dict[str, Any]:
        ran.append(task["topic"])
        return {"findings": [task["topic"]]}

    def broken_ids(name: str, task: Any) -> str:
        raise KeyError("no such field")

    with capture() as cap:
        handler = JournalCallbackHandler(nodes={"research"}, chunk_id=broken_ids, strict=strict)
        graph = research_graph(research)

        def invoke() -> None:
            graph.invoke({"topics": ["pricing"], "findings": []}, {"callbacks": [handler]})

        if strict:
            with pytest.raises(JournalWriteError, match="no such field"):
                invoke()
            assert ran == []
        else:
            invoke()
            assert ran == ["pricing"]
        assert cap.journal.dispatched() == []
