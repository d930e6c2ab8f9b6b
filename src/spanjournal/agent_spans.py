"""Which spans of other instrumentations are units of work, and how their chunk ids are made.

Frameworks that emit OpenTelemetry GenAI agent spans (``invoke_agent
{agent}``) dispatch sub-agents the user never calls directly, so there is
nothing to decorate. :class:`AgentSpans`, passed as ``agent_spans=`` to
:func:`spanjournal.configure` or :class:`~spanjournal.JournalSpanProcessor`,
makes those spans journaled units:

- **Which spans are agent spans.** By default a span whose name is
  ``invoke_agent {agent}``, or whose start attributes say
  ``gen_ai.operation.name = "invoke_agent"`` and name the agent
  (``gen_ai.agent.name``). The agent's name comes from the span name first:
  instrumentations that put a placeholder in the attribute (the official
  OpenAI Agents instrumentation writes ``"OpenAI Agent"`` there) still name
  the real agent in the span name. An ``invoke_agent`` span that names no
  agent (a run's root span, named after the workflow) is not a unit. ``match``
  replaces the rule: a callable of (span name, start attributes) that returns
  the agent's name, or None for a span that is not an agent span.
- **Only the outermost span of a unit.** The first agent span directly inside
  a ``@dispatch`` (no other agent span between them) is that dispatch's own
  agent, not a new chunk. An agent span inside another unit's agent span (a
  sub-agent called as a tool) is a unit of its own, linked to its parent unit
  by ``parent_span_id``.
- **Stable chunk ids.** In this order: the explicit id, if the span carries
  one of ``id_attributes`` at start and no unit with that id is in flight in
  this process; else ``chunk_id(start)``, if given and not None; else an id
  derived from the agent name and the input, when one of
  ``input_attributes`` is there at start: ``{agent}-{hash of the normalised
  input}`` (:mod:`spanjournal.chunk_ids`); else from the agent name and its place among its parent unit's
  sub-agents of that name: ``{parent chunk id}/{agent}#{n}`` (``{agent}#{n}``
  for an agent with no parent unit, counted per process). Never the span id.

Instrumentations that add the input only after start (the official OpenAI
Agents one does) get the ordinal ids. They are stable because a unit's
sub-agents start in the order its model asked for them (the SDK starts
parallel tool calls in the order of the model's response), so the same run
asked again gives the same chunk the same id; they are distinct because every
agent started under one parent gets its own number. They are *not* stable
when the order in which sub-agents start varies from run to run (threads
racing to start): use explicit ids (``id_attributes``, ``chunk_id``) or a
native integration there.

This module needs OpenTelemetry only for the types it is given.

>>> policy = AgentSpans()
>>> policy.agent_of("invoke_agent researcher", {"gen_ai.agent.name": "OpenAI Agent"})
'researcher'
>>> policy.agent_of("Agent workflow", {"gen_ai.operation.name": "invoke_agent"}) is None
True
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from spanjournal import semconv
from spanjournal.chunk_ids import derived_chunk_id

__all__ = ["AgentSpanStart", "AgentSpans", "default_agent_of"]

logger = logging.getLogger("spanjournal")

_PREFIX = semconv.INVOKE_AGENT + " "

#: Start attributes that carry an agent's input in common instrumentations.
DEFAULT_INPUT_ATTRIBUTES: tuple[str, ...] = (
    "gen_ai.input.messages",
    "gen_ai.prompt",
    "input.value",
    "traceloop.entity.input",
)


def default_agent_of(name: str, attributes: Mapping[str, Any]) -> str | None:
    """The agent a span invokes, by the GenAI conventions; None if it is not an agent span.

    ``invoke_agent {agent}`` as the span name wins over the
    ``gen_ai.agent.name`` attribute (which some instrumentations fill with a
    placeholder); the attribute counts only with ``gen_ai.operation.name =
    "invoke_agent"``.
    """
    if name.startswith(_PREFIX):
        agent = name[len(_PREFIX) :].strip()
        if agent:
            return agent
    if attributes.get(semconv.GEN_AI_OPERATION_NAME) == semconv.INVOKE_AGENT:
        value = attributes.get(semconv.GEN_AI_AGENT_NAME)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


@dataclass(frozen=True)
class AgentSpanStart:
    """What is known of an agent span at its start: given to a ``chunk_id`` policy."""

    #: The span's name.
    name: str
    #: The agent's name (as ``match`` found it).
    agent: str
    #: The span's start attributes.
    attributes: Mapping[str, Any]
    #: The chunk id of the unit this one runs inside, if any.
    parent_chunk_id: str | None
    #: 1 for the first sub-agent of this name under that parent (or, with no parent, in this process), 2...
    ordinal: int


@dataclass(frozen=True)
class AgentSpans:
    """Which spans of other instrumentations are journaled units, and how their chunk ids are made.

    See the module documentation for the rules. Every field is optional::

        spanjournal.configure(journal="runs/run.jsonl", agent_spans=spanjournal.AgentSpans())
        # units by span name only (an instrumentation that sets its attributes after start):
        AgentSpans(match=lambda name, attrs: name.split()[-1] if name == "execute_task research" else None)
        # an explicit id your code puts on the span at start:
        AgentSpans(id_attributes=("app.unit_id",))
    """

    #: (span name, start attributes) -> the agent's name, or None for a span that is not an agent span.
    match: Callable[[str, Mapping[str, Any]], str | None] = default_agent_of
    #: Start attributes holding an explicit chunk id, first found wins.
    id_attributes: Sequence[str] = ()
    #: Start attributes holding the agent's input, first found wins.
    input_attributes: Sequence[str] = DEFAULT_INPUT_ATTRIBUTES
    #: A chunk id policy: returns the id, or None for the default derivation.
    chunk_id: Callable[[AgentSpanStart], str | None] | None = None

    def agent_of(self, name: str, attributes: Mapping[str, Any]) -> str | None:
        """The agent's name if a span with this name and these start attributes is an agent span."""
        agent = self.match(name, attributes)
        return agent if isinstance(agent, str) and agent else None


def input_chunk_id(agent: str, value: object) -> str:
    """The chunk id derived from an agent's name and its input (:func:`spanjournal.chunk_ids.derived_chunk_id`)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        value = "\n".join(value)  # a sequence attribute of message texts: one text
    return derived_chunk_id(agent, value)


@dataclass
class Unit:
    """A journaled unit in flight: a dispatch span or an agent span."""

    chunk_id: str
    span_id: int
    agent: str | None
    #: The span id of the unit it runs inside (journaled), if any.
    parent_span_id: int | None
    #: Sub-agents started under it so far, by agent name (and by derived id): the ordinals.
    counts: dict[str, int] = field(default_factory=dict)
    #: A dispatch's own agent span was seen (the first agent span directly inside it).
    agent_absorbed: bool = False


class _Node:
    """An open span inside a unit: the unit, and whether an agent span lies between them."""

    __slots__ = ("agent_between", "unit")

    def __init__(self, unit: Unit, agent_between: bool) -> None:
        self.unit = unit
        self.agent_between = agent_between


class UnitTracker:
    """Follows open spans to decide, at each agent span's start, whether it is a new unit and its id.

    Only spans inside a unit and agent spans are kept, each until it ends.
    Thread safe.
    """

    def __init__(self, policy: AgentSpans) -> None:
        self.policy = policy
        self._open: dict[int, _Node] = {}
        self._units: dict[int, Unit] = {}
        self._in_flight: dict[str, int] = {}
        self._top_counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._warned_duplicate = False

    def open_dispatch(self, span_id: int, parent_span_id: int | None, chunk_id: str, agent: str | None) -> None:
        """A dispatch span started: agent spans inside it are its own agent, or its sub-agents."""
        unit = Unit(chunk_id, span_id, agent, None)
        with self._lock:
            parent = self._open.get(parent_span_id) if parent_span_id else None
            if parent is not None:
                unit.parent_span_id = parent.unit.span_id
            self._open[span_id] = _Node(unit, agent_between=False)

    def start(self, span_id: int, parent_span_id: int | None, name: str, attributes: Mapping[str, Any]) -> Unit | None:
        """A span started: the new unit to journal, or None (not an agent span, or part of a unit)."""
        with self._lock:
            parent = self._open.get(parent_span_id) if parent_span_id else None
        agent = self.policy.agent_of(name, attributes)
        if agent is None:
            if parent is not None:
                with self._lock:
                    self._open[span_id] = parent
            return None
        with self._lock:
            if parent is not None and not parent.agent_between and not parent.unit.agent_absorbed:
                parent.unit.agent_absorbed = True  # the dispatch's own agent
                self._open[span_id] = _Node(parent.unit, agent_between=True)
                return None
            parent_unit = parent.unit if parent is not None else None
            chunk_id = self._chunk_id(name, agent, attributes, parent_unit)
            unit = Unit(chunk_id, span_id, agent, parent_unit.span_id if parent_unit else None)
            self._open[span_id] = _Node(unit, agent_between=True)
            self._units[span_id] = unit
            self._in_flight[chunk_id] = self._in_flight.get(chunk_id, 0) + 1
        return unit

    def end(self, span_id: int) -> Unit | None:
        """A span ended: the unit it started, if it started one."""
        with self._lock:
            self._open.pop(span_id, None)
            unit = self._units.pop(span_id, None)
            if unit is not None:
                left = self._in_flight.get(unit.chunk_id, 0) - 1
                if left > 0:
                    self._in_flight[unit.chunk_id] = left
                else:
                    self._in_flight.pop(unit.chunk_id, None)
        return unit

    def _count(self, parent: Unit | None, key: str) -> int:
        counts = parent.counts if parent is not None else self._top_counts
        n = counts.get(key, 0) + 1
        counts[key] = n
        return n

    def _chunk_id(self, name: str, agent: str, attributes: Mapping[str, Any], parent: Unit | None) -> str:
        """Called under the lock."""
        policy = self.policy
        for key in policy.id_attributes:
            value = attributes.get(key)
            if value is None or value == "":
                continue
            explicit = str(value)
            if explicit not in self._in_flight:
                return explicit
            if not self._warned_duplicate:
                self._warned_duplicate = True
                logger.warning(
                    "spanjournal: %s=%r is on two agent spans in flight at once: it does not identify a unit; "
                    "ids are derived instead for the later ones",
                    key,
                    explicit,
                )
            break
        ordinal = self._count(parent, agent)
        parent_id = parent.chunk_id if parent is not None else None
        if policy.chunk_id is not None:
            chosen = policy.chunk_id(AgentSpanStart(name, agent, attributes, parent_id, ordinal))
            if chosen:
                return str(chosen)
        for key in policy.input_attributes:
            value = attributes.get(key)
            if value is not None and value != "":
                base = input_chunk_id(agent, value)
                seen = self._count(parent, "\0" + base)
                return base if seen == 1 else f"{base}#{seen}"
        own = f"{agent}#{ordinal}"
        return f"{parent_id}/{own}" if parent_id else own
