"""OpenAI Agents SDK: every agent run, and every agent called as a tool, is a journaled unit.

:func:`instrument_openai_agents` returns run hooks to pass to ``Runner.run``
and to every ``Agent.as_tool`` whose sub-agent should be a unit, and adds a
tracing processor to the SDK's own tracing (once)::

    hooks = spanjournal.instrument_openai_agents()
    researcher_tool = researcher.as_tool("research", "Research one topic", hooks=hooks)
    result = await Runner.run(orchestrator, "Compare six vendors", hooks=hooks,
                              run_config=RunConfig(trace_metadata={"spanjournal.chunk_id": "compare-vendors"}))

The two halves see different things, and a unit needs both:

- the hooks (``on_agent_start``) see the agent and what it was asked (the
  run's input, or an agent-as-tool's tool input) *before its first model
  call*: the ``subagent_dispatched`` line is written there, and in strict
  mode a line that could not be written raises from the hook, which stops
  the run before the model is called; ``on_llm_end`` adds each model
  response's ``usage``; ``on_agent_end`` completes the unit;
- the tracing processor sees the SDK's spans: which agent span a hook runs
  under (so nested units find their parent unit), the trace's metadata and
  group id, and an agent span that ends with an error (a model error, a
  raising tool) or without a final output (a handoff): the hooks are not
  called then.

Chunk ids: the trace metadata key ``spanjournal.chunk_id`` (``chunk_id_key``)
names the run's outermost unit; otherwise a unit's id is its agent's name and
a hash of its normalised input (``researcher-3f2a9c1d0b7e4a55``). A unit
inside another one is named under its parent
(``compare-vendors/researcher-3f2a9c1d0b7e4a55``): the same sub-agent asked
the same thing by the same parent after a crash is the same chunk. An agent
handed off to, or a second run in the same trace, is named under the trace's
first unit, so that no two units share an id.

This module imports the ``agents`` package; ``import spanjournal`` does not
import this module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from agents import Agent, RunContextWrapper, RunHooks
from agents.items import ModelResponse
from agents.run_context import AgentHookContext
from agents.tracing import (
    AgentSpanData,
    Span,
    Trace,
    TracingProcessor,
    add_trace_processor,
    get_current_span,
    get_current_trace,
)

from spanjournal.chunk_ids import derived_chunk_id
from spanjournal.instrument import StartedDispatch, start_dispatch
from spanjournal.journal import JournalWriteError

__all__ = ["DEFAULT_CHUNK_ID_KEY", "JournalRunHooks", "instrument_openai_agents"]

logger = logging.getLogger("spanjournal")

#: The trace metadata key (``RunConfig(trace_metadata=...)``) that names a run's outermost unit.
DEFAULT_CHUNK_ID_KEY = "spanjournal.chunk_id"
#: How much of a unit's input is written as its ``task_description``.
TASK_DESCRIPTION_CHARS = 500


def instrument_openai_agents(*, strict: bool = True, chunk_id_key: str = DEFAULT_CHUNK_ID_KEY) -> JournalRunHooks:
    """Journal the agent runs of the OpenAI Agents SDK; return the hooks to pass to runs and agent tools.

    Pass the hooks to ``Runner.run``/``run_sync``/``run_streamed``
    (``hooks=``) and to each ``Agent.as_tool(..., hooks=)`` whose agent
    should be a unit of its own. The journal is the one
    :func:`spanjournal.configure` set up. ``strict`` (default): a unit whose
    dispatched line could not be written raises
    :class:`~spanjournal.JournalWriteError` before its model is called.
    """
    return JournalRunHooks(strict=strict, chunk_id_key=chunk_id_key, processor=_shared_processor())


_processor: _AgentSpanTracker | None = None
_processor_lock = threading.Lock()


def _shared_processor() -> _AgentSpanTracker:
    global _processor
    with _processor_lock:
        if _processor is None:
            _processor = _AgentSpanTracker()
            add_trace_processor(_processor)
        return _processor


class _AgentSpanTracker(TracingProcessor):
    """The SDK-side half: span parents, trace metadata, and agent spans that end without the hooks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        #: span id -> (parent span id, trace id, is an agent span), for spans of traces not ended.
        self._spans: dict[str, tuple[str | None, str, bool]] = {}
        #: agent span id -> the unit the hooks started for it.
        self._units: dict[str, _Unit] = {}
        #: Agent spans the hooks saw start (units, or refused by strict), until they end.
        self._claimed: set[str] = set()
        self._warned: set[str] = set()
        #: trace id -> the trace's first unit without a parent unit (the run's root).
        self._roots: dict[str, _Unit] = {}
        self._by_trace: dict[str, set[str]] = {}

    # -- the TracingProcessor interface --------------------------------------------

    def on_trace_start(self, trace: Trace) -> None:
        pass

    def on_trace_end(self, trace: Trace) -> None:
        with self._lock:
            for span_id in self._by_trace.pop(trace.trace_id, ()):
                self._spans.pop(span_id, None)
            self._roots.pop(trace.trace_id, None)

    def on_span_start(self, span: Span[Any]) -> None:
        with self._lock:
            self._spans[span.span_id] = (span.parent_id, span.trace_id, isinstance(span.span_data, AgentSpanData))
            self._by_trace.setdefault(span.trace_id, set()).add(span.span_id)

    def on_span_end(self, span: Span[Any]) -> None:
        if not isinstance(span.span_data, AgentSpanData):
            return
        with self._lock:
            unit = self._units.pop(span.span_id, None)
            claimed = span.span_id in self._claimed
            self._claimed.discard(span.span_id)
        if unit is None:
            if not claimed:
                self._warn_unhooked(span)
            return
        error = span.error
        if error is not None:
            unit.end(error=_error_text(error), error_type=_error_type(error))
        else:
            unit.end()

    def shutdown(self) -> None:
        pass

    def force_flush(self) -> None:
        pass

    # -- used by the hooks -----------------------------------------------------------

    def agent_span_of(self, span_id: str | None) -> str | None:
        """The nearest agent span at or above ``span_id``."""
        with self._lock:
            while span_id is not None:
                known = self._spans.get(span_id)
                if known is None:
                    return None
                if known[2]:
                    return span_id
                span_id = known[0]
        return None

    def parent_unit(self, agent_span_id: str) -> _Unit | None:
        """The unit of the nearest agent span above ``agent_span_id``, if any."""
        with self._lock:
            known = self._spans.get(agent_span_id)
            span_id = known[0] if known is not None else None
            while span_id is not None:
                unit = self._units.get(span_id)
                if unit is not None:
                    return unit
                known = self._spans.get(span_id)
                span_id = known[0] if known is not None else None
        return None

    def trace_root(self, agent_span_id: str) -> _Unit | None:
        """The first unit of ``agent_span_id``'s trace that had no parent unit, if any."""
        with self._lock:
            known = self._spans.get(agent_span_id)
            return self._roots.get(known[1]) if known is not None else None

    def set_trace_root(self, agent_span_id: str, unit: _Unit) -> None:
        with self._lock:
            known = self._spans.get(agent_span_id)
            if known is not None:
                self._roots.setdefault(known[1], unit)

    def unit(self, agent_span_id: str) -> _Unit | None:
        with self._lock:
            return self._units.get(agent_span_id)

    def claim(self, agent_span_id: str) -> None:
        """The hooks saw this agent span start."""
        with self._lock:
            self._claimed.add(agent_span_id)

    def add_unit(self, agent_span_id: str, unit: _Unit) -> None:
        with self._lock:
            self._units[agent_span_id] = unit

    def _warn_unhooked(self, span: Span[Any]) -> None:
        """An agent ran inside a unit without the hooks (an ``as_tool`` without ``hooks=``): say so, once per agent."""
        parent = self.parent_unit(span.span_id)
        name = str(span.span_data.name)
        if parent is None or name in self._warned:
            return
        self._warned.add(name)
        logger.warning(
            "spanjournal: agent %r ran inside unit %r without spanjournal's run hooks, so it was not journaled "
            "as a unit of its own: pass hooks= to its as_tool()",
            name,
            parent.dispatch.chunk_id,
        )

    def forget_unit(self, agent_span_id: str) -> None:
        with self._lock:
            self._units.pop(agent_span_id, None)


class _Unit:
    """One agent run being journaled: its dispatch and the tokens of its model responses so far."""

    __slots__ = ("dispatch", "input_tokens", "lock", "output_tokens")

    def __init__(self, dispatch: StartedDispatch) -> None:
        self.dispatch = dispatch
        self.input_tokens = 0
        self.output_tokens = 0
        self.lock = threading.Lock()

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        with self.lock:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    def end(self, *, error: str | None = None, error_type: str | None = None) -> None:
        with self.lock:
            input_tokens, output_tokens = self.input_tokens, self.output_tokens
        self.dispatch.end(
            success=error is None,
            error=error,
            error_type=error_type,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )


class JournalRunHooks(RunHooks[Any]):
    """Run hooks that journal each agent run as a unit; made by :func:`instrument_openai_agents`.

    To add hooks of your own, subclass it and call ``super()`` in the
    methods you override.
    """

    def __init__(self, *, strict: bool, chunk_id_key: str, processor: _AgentSpanTracker) -> None:
        self.strict = strict
        self.chunk_id_key = chunk_id_key
        self._tracker = processor

    @property
    def trace_processor(self) -> TracingProcessor:
        """The processor added to the SDK's tracing; keep it in any list given to ``set_trace_processors``."""
        return self._tracker

    async def on_agent_start(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        """Dispatch the unit (before its first model call); strict: raise if that line is not kept.

        Hooks raise into the run: only a strict refusal (``JournalWriteError``) leaves here.
        """
        try:
            self._start_unit(context, agent)
        except JournalWriteError:
            raise
        except Exception as exc:
            if self.strict:
                raise JournalWriteError(None, f"agent {agent.name!r} could not be journaled: {exc!r}") from exc
            logger.error("spanjournal: agent %r runs unjournaled: %r", agent.name, exc)

    def _start_unit(self, context: AgentHookContext[Any], agent: Agent[Any]) -> None:
        current = get_current_span()
        agent_span = self._tracker.agent_span_of(current.span_id if current is not None else None)
        if agent_span is None:
            self._no_agent_span(agent)
            return
        if self._tracker.unit(agent_span) is not None:
            return
        self._tracker.claim(agent_span)
        # A unit's parent is the unit it runs in; an agent handed off to (or a second run in the
        # same trace) is named under the trace's first unit, so no two units share an id.
        parent = self._tracker.parent_unit(agent_span) or self._tracker.trace_root(agent_span)
        trace = get_current_trace()
        exported = (trace.export() if trace is not None else None) or {}
        metadata = exported.get("metadata") or {}
        turn_input = context.turn_input
        explicit = metadata.get(self.chunk_id_key) if parent is None and isinstance(metadata, Mapping) else None
        chunk_id = str(explicit) if explicit else unit_chunk_id(agent.name, turn_input)
        if parent is not None:
            chunk_id = f"{parent.dispatch.chunk_id}/{chunk_id}"
        attributes: dict[str, Any] = {"openai_agents.trace_id": str(exported.get("id") or "")}
        group_id = exported.get("group_id")
        if group_id:
            attributes["openai_agents.group_id"] = str(group_id)
        dispatch = start_dispatch(
            chunk_id,
            parent=parent.dispatch if parent is not None else None,
            agent_name=agent.name,
            task_description=_input_text(turn_input)[:TASK_DESCRIPTION_CHARS] or None,
            attributes=attributes,
            strict=self.strict,
        )
        unit = _Unit(dispatch)
        self._tracker.add_unit(agent_span, unit)
        if parent is None:
            self._tracker.set_trace_root(agent_span, unit)

    async def on_llm_end(self, context: RunContextWrapper[Any], agent: Agent[Any], response: ModelResponse) -> None:
        """Add the response's token usage to its unit."""
        unit = self._current_unit()
        usage = response.usage
        if unit is not None and usage is not None:
            try:
                unit.add_usage(int(usage.input_tokens or 0), int(usage.output_tokens or 0))
            except (TypeError, ValueError) as exc:
                logger.debug("spanjournal: unreadable model usage: %r", exc)

    async def on_agent_end(self, context: AgentHookContext[Any], agent: Agent[Any], output: Any) -> None:
        """Complete the unit: its agent produced its final output."""
        current = get_current_span()
        agent_span = self._tracker.agent_span_of(current.span_id if current is not None else None)
        unit = self._tracker.unit(agent_span) if agent_span is not None else None
        if unit is not None and agent_span is not None:
            self._tracker.forget_unit(agent_span)
            try:
                unit.end()
            except Exception as exc:  # hooks raise into the run: only strict refusals may
                logger.error("spanjournal: could not complete unit %r: %r", unit.dispatch.chunk_id, exc)

    def _current_unit(self) -> _Unit | None:
        """The unit of the agent span the caller runs under, if any."""
        current = get_current_span()
        agent_span = self._tracker.agent_span_of(current.span_id if current is not None else None)
        return self._tracker.unit(agent_span) if agent_span is not None else None

    def _no_agent_span(self, agent: Agent[Any]) -> None:
        message = (
            f"agent {agent.name!r} runs with the Agents SDK's tracing disabled, or without spanjournal's trace "
            "processor: spanjournal needs the SDK's agent spans to journal the run (do not set tracing_disabled / "
            "OPENAI_AGENTS_DISABLE_TRACING; agents.set_trace_processors() removes it: include hooks.trace_processor)"
        )
        if self.strict:
            raise JournalWriteError(None, message)
        logger.warning("spanjournal: %s", message)


def unit_chunk_id(agent_name: str, agent_input: Any) -> str:
    """The chunk id of ``agent_name`` asked ``agent_input``: the name and a hash of the normalised input.

    A bare string is the user message it stands for; the rule is
    :func:`spanjournal.chunk_ids.derived_chunk_id`.

    >>> unit_chunk_id("researcher", "Compare  vendors") == unit_chunk_id("researcher", [
    ...     {"role": "user", "content": "Compare  vendors"}])
    True
    """
    if isinstance(agent_input, str):
        agent_input = [{"role": "user", "content": agent_input}]
    return derived_chunk_id(agent_name, agent_input)


def _input_text(agent_input: Any) -> str:
    """The text of an input's messages, for a task description."""
    if isinstance(agent_input, str):
        return agent_input
    parts: list[str] = []
    for item in agent_input or ():
        content = item.get("content") if isinstance(item, Mapping) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(c["text"] for c in content if isinstance(c, Mapping) and isinstance(c.get("text"), str))
    return "\n".join(parts)


def _error_text(error: Mapping[str, Any]) -> str:
    data = error.get("data")
    if isinstance(data, Mapping):
        message = data.get("error") or data.get("message")
        if message:
            return str(message)
    return str(error.get("message") or "agent run failed")


def _error_type(error: Mapping[str, Any]) -> str | None:
    data = error.get("data")
    name = data.get("name") if isinstance(data, Mapping) else None
    return str(name) if name else None
