"""A LangGraph ``Send`` fan-out journaled through openllmetry's LangChain instrumentation only.

    python langgraph_fanout.py JOURNAL MODE

The graph fans the node ``research`` out over six topics with ``Send``.
MODE ``slow``: the nodes on topics 1, 3 and 5 never return (the test kills
the process); ``fast``: every node returns. openllmetry starts its spans with
no attributes (it sets them after start), so the units are matched by span
name: ``execute_task research``.
"""

from __future__ import annotations

import asyncio
import operator
import sys
from collections.abc import Mapping
from typing import Annotated, Any, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send
from opentelemetry.instrumentation.langchain import LangchainInstrumentor

import spanjournal

TOPICS = [f"topic-{i}" for i in range(6)]
SLOW = {"topic-1", "topic-3", "topic-5"}


class State(TypedDict):
    topics: list[str]
    notes: Annotated[list[str], operator.add]


class Task(TypedDict):
    topic: str


def research_nodes(name: str, attributes: Mapping[str, Any]) -> str | None:
    """openllmetry names a node's span ``execute_task {node}``: the node ``research`` is the unit."""
    return "research" if name == "execute_task research" else None


async def main(journal: str, mode: str) -> None:
    sj = spanjournal.configure(
        journal=journal,
        agent_spans=spanjournal.AgentSpans(match=research_nodes),
        exporter="none",
        durability="flush",
    )
    LangchainInstrumentor().instrument(tracer_provider=sj.tracer_provider)
    slow = mode == "slow"

    async def research(task: Task) -> dict[str, list[str]]:
        if slow and task["topic"] in SLOW:
            await asyncio.sleep(3600)  # in flight until the process is killed
        return {"notes": [f"notes on {task['topic']}"]}

    def fan_out(state: State) -> list[Send]:
        return [Send("research", {"topic": t}) for t in state["topics"]]

    graph = StateGraph(State)
    graph.add_node("research", research)
    graph.add_conditional_edges(START, fan_out, ["research"])
    graph.add_edge("research", END)
    result = await graph.compile().ainvoke({"topics": TOPICS, "notes": []})
    print(len(result["notes"]), flush=True)
    sj.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
