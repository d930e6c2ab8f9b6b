"""An OpenAI Agents SDK fan-out journaled through the official OpenTelemetry instrumentation only.

    python openai_agents_fanout.py JOURNAL MODE

An orchestrator agent calls the sub-agent ``researcher`` as a tool on six
topics in parallel. Models are scripted (no network). MODE ``slow``: the
researchers on topics 1, 3 and 5 never answer (the test kills the process);
``fast``: every researcher answers; ``dispatched``: as ``fast``, the run
inside ``spanjournal.dispatch_span``; ``failing``: as ``fast``, the model of
the researcher on topic 2 raises. The journal is written by
``configure(agent_spans=AgentSpans())`` from the instrumentation's spans:
nothing in this script calls spanjournal per agent.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, Model, ModelResponse, ModelSettings, Runner, Usage, set_trace_processors
from agents.items import TResponseInputItem
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
from opentelemetry.instrumentation.openai_agents import OpenAIAgentsInstrumentor

import spanjournal

TOPICS = [f"topic-{i}" for i in range(6)]
SLOW = {"topic-1", "topic-3", "topic-5"}


def message(text: str) -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id="msg",
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def text_of(items: str | list[TResponseInputItem]) -> str:
    return items if isinstance(items, str) else json.dumps(items, default=str)


class ScriptedModel(Model):
    """Answers from a script instead of a provider."""

    def __init__(self, role: str, slow: bool, failing: bool = False) -> None:
        self.role = role
        self.slow = slow
        self.failing = failing

    async def get_response(self, system_instructions: Any, input: Any, *args: Any, **kwargs: Any) -> ModelResponse:
        usage = Usage(requests=1, input_tokens=100, output_tokens=10, total_tokens=110)
        text = text_of(input)
        if self.role == "orchestrator":
            if "function_call_output" in text:
                return ModelResponse(output=[message("all topics researched")], usage=usage, response_id=None)
            calls = [
                ResponseFunctionToolCall(
                    id=f"fc-{i}",
                    call_id=f"call-{i}",
                    type="function_call",
                    name="research",
                    arguments=json.dumps({"input": topic}),
                )
                for i, topic in enumerate(TOPICS)
            ]
            return ModelResponse(output=list(calls), usage=usage, response_id=None)
        topic = next(t for t in TOPICS if t in text)
        if self.failing and topic == "topic-2":
            raise RuntimeError("429 quota exceeded")
        if self.slow and topic in SLOW:
            await asyncio.sleep(3600)  # in flight until the process is killed
        return ModelResponse(output=[message(f"notes on {topic}")], usage=usage, response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        raise NotImplementedError


async def main(journal: str, mode: str) -> None:
    sj = spanjournal.configure(
        journal=journal, agent_spans=spanjournal.AgentSpans(), exporter="none", durability="flush"
    )
    set_trace_processors([])  # no export to the provider's tracing backend
    OpenAIAgentsInstrumentor().instrument(tracer_provider=sj.tracer_provider)
    slow = mode == "slow"
    researcher = Agent(
        name="researcher",
        instructions="Research the topic.",
        model=ScriptedModel("researcher", slow, failing=mode == "failing"),
    )
    orchestrator = Agent(
        name="orchestrator",
        instructions="Research every topic.",
        model=ScriptedModel("orchestrator", slow),
        model_settings=ModelSettings(parallel_tool_calls=True),
        tools=[researcher.as_tool(tool_name="research", tool_description="Research one topic")],
    )
    if mode == "dispatched":  # the run inside a dispatch of the user's own: one unit, not two
        with spanjournal.dispatch_span("review-1", task_description="Research six topics"):
            result = await Runner.run(orchestrator, "Research six topics")
    else:
        result = await Runner.run(orchestrator, "Research six topics")
    print(result.final_output, flush=True)
    sj.shutdown()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
