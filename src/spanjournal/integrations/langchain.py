"""LangChain / LangGraph: the runs you mark as units are journaled, through a callback handler.

A run is a unit when

- it is a LangGraph node named in ``nodes`` (``JournalCallbackHandler(nodes={"research"})``:
  each task of the node, e.g. each ``Send("research", ...)`` of a fan-out, is a unit); or
- its metadata carries ``chunk_id_key`` (``spanjournal.chunk_id``: its value is the chunk id)
  or ``unit_key`` (``spanjournal.unit``: a derived id), and its parent run's metadata does
  not carry the same value (metadata is inherited by child runs: only the outermost run
  that carries it is the unit).

``on_chain_start`` writes the ``subagent_dispatched`` line before the run's body runs;
``on_chain_end``/``on_chain_error`` complete it, with the tokens of every chat model run
under it (``usage_metadata`` of the generated messages). Chunk ids: the explicit one, or
``chunk_id(name, input)`` if you give that function, else the run's name and a hash of its
normalised input (``research-3f2a9c1d0b7e4a55``); a unit inside another one is named under
it (``parent/child``). The same node asked the same thing after a crash is the same chunk.

Strict (the default): when the dispatched line cannot be written, ``on_chain_start`` raises
:class:`~spanjournal.JournalWriteError` and the handler has ``raise_error = True``, so the
run stops before its body runs. The handler runs inline (``run_inline = True``), also under
``ainvoke``, so the line is written before the node starts.

    handler = JournalCallbackHandler(nodes={"research"})
    graph.invoke({"topics": topics}, config={"callbacks": [handler]})

This module imports ``langchain_core``; ``import spanjournal`` does not import this module.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGeneration, LLMResult
from pydantic import BaseModel

from spanjournal.chunk_ids import derived_chunk_id, normalised_input
from spanjournal.instrument import StartedDispatch, start_dispatch
from spanjournal.journal import JournalWriteError

__all__ = ["DEFAULT_CHUNK_ID_KEY", "DEFAULT_UNIT_KEY", "JournalCallbackHandler", "unit_chunk_id"]

logger = logging.getLogger("spanjournal")

#: The metadata key whose value is a unit's explicit chunk id.
DEFAULT_CHUNK_ID_KEY = "spanjournal.chunk_id"
#: The metadata key that marks a run as a unit whose id is derived from its name and input.
DEFAULT_UNIT_KEY = "spanjournal.unit"
#: How much of a unit's input is written as its ``task_description``.
TASK_DESCRIPTION_CHARS = 500


class _Run:
    """A chain run seen by the handler: its parent, its metadata marks, and its unit if it is one."""

    __slots__ = ("input_tokens", "marks", "output_tokens", "parent", "unit")

    def __init__(self, parent: UUID | None, marks: tuple[object, object], unit: StartedDispatch | None) -> None:
        self.parent = parent
        self.marks = marks
        self.unit = unit
        self.input_tokens = 0
        self.output_tokens = 0


class JournalCallbackHandler(BaseCallbackHandler):
    """Journals the runs marked as units (see the module documentation). Thread safe.

    ``nodes``: LangGraph node names whose runs are units. ``chunk_id``: a
    function of (run name, run input) returning the chunk id, or None for the
    derived one. ``strict``: raise before a unit runs when its dispatched
    line could not be written (default); ``False`` logs, counts and runs it.
    """

    raise_error = True
    run_inline = True

    def __init__(
        self,
        *,
        nodes: Collection[str] = (),
        chunk_id: Callable[[str, Any], str | None] | None = None,
        chunk_id_key: str = DEFAULT_CHUNK_ID_KEY,
        unit_key: str = DEFAULT_UNIT_KEY,
        strict: bool = True,
    ) -> None:
        self.nodes = frozenset(nodes)
        self.chunk_id = chunk_id
        self.chunk_id_key = chunk_id_key
        self.unit_key = unit_key
        self.strict = strict
        self._lock = threading.Lock()
        self._runs: dict[UUID, _Run] = {}

    # -- chains: where units start and end -------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Dispatch the run if it is a unit; strict: raise if its line could not be written."""
        metadata = metadata or {}
        name = _run_name(serialized, kwargs)
        marks = (metadata.get(self.chunk_id_key), metadata.get(self.unit_key))
        with self._lock:
            parent_run = self._runs.get(parent_run_id) if parent_run_id is not None else None
            parent_unit = self._unit_above(parent_run_id)
        # Metadata is inherited: a mark counts on the outermost run that carries it.
        above = parent_run.marks if parent_run is not None else (None, None)
        explicit = marks[0] if marks[0] and marks[0] != above[0] else None
        marked = bool(marks[1]) and marks[1] != above[1]
        is_unit = bool(explicit) or marked or (name in self.nodes and metadata.get("langgraph_node") == name)
        unit = None
        if is_unit:
            try:
                chunk_id = self._chunk_id(name, inputs, explicit)
                if parent_unit is not None:
                    chunk_id = f"{parent_unit.chunk_id}/{chunk_id}"
                unit = start_dispatch(
                    chunk_id,
                    parent=parent_unit,
                    agent_name=name,
                    task_description=_describe(inputs)[:TASK_DESCRIPTION_CHARS] or None,
                    attributes=_graph_attributes(metadata),
                    strict=self.strict,
                )
            except JournalWriteError:
                raise
            except Exception as exc:  # e.g. a chunk_id function that raised
                if self.strict:
                    raise JournalWriteError(None, f"run {name!r} could not be journaled: {exc!r}") from exc
                logger.error("spanjournal: run %r runs unjournaled: %r", name, exc)
        with self._lock:
            self._runs[run_id] = _Run(parent_run_id, marks, unit)

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """Complete the unit (successfully), with the tokens of the chat model runs under it."""
        self._end(run_id, None)

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """Complete the unit as failed, with the error."""
        self._end(run_id, error)

    # -- tools and chat models: their tokens go to the unit above them ----------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        metadata = metadata or {}
        marks = (metadata.get(self.chunk_id_key), metadata.get(self.unit_key))
        with self._lock:
            self._runs[run_id] = _Run(parent_run_id, marks, None)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def on_llm_end(
        self, response: LLMResult, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Add the usage of the generated messages to the unit above the model run."""
        try:
            input_tokens, output_tokens = _usage(response)
        except (TypeError, ValueError, AttributeError) as exc:
            logger.debug("spanjournal: unreadable model usage: %r", exc)
            return
        if not (input_tokens or output_tokens):
            return
        with self._lock:
            run_id_above = parent_run_id
            while run_id_above is not None:
                run = self._runs.get(run_id_above)
                if run is None:
                    return
                if run.unit is not None:
                    run.input_tokens += input_tokens
                    run.output_tokens += output_tokens
                    return
                run_id_above = run.parent

    # -- internals -------------------------------------------------------------------

    def _unit_above(self, run_id: UUID | None) -> StartedDispatch | None:
        """The unit of ``run_id`` or of its nearest ancestor that is one (called under the lock)."""
        while run_id is not None:
            run = self._runs.get(run_id)
            if run is None:
                return None
            if run.unit is not None:
                return run.unit
            run_id = run.parent
        return None

    def _chunk_id(self, name: str, inputs: Any, explicit: object) -> str:
        if explicit:
            return str(explicit)
        if self.chunk_id is not None:
            given = self.chunk_id(name, inputs)
            if given:
                return given
        return unit_chunk_id(name, inputs)

    def _end(self, run_id: UUID, error: BaseException | None) -> None:
        with self._lock:
            run = self._runs.pop(run_id, None)
        if run is None or run.unit is None:
            return
        try:
            run.unit.end(
                success=error is None,
                error=error,
                input_tokens=run.input_tokens,
                output_tokens=run.output_tokens,
            )
        except Exception as exc:  # the handler raises into the graph: only strict refusals may
            logger.error("spanjournal: could not complete unit %r: %r", run.unit.chunk_id, exc)


def unit_chunk_id(name: str, run_input: Any) -> str:
    """The chunk id of the run ``name`` given ``run_input``: the name and a hash of the normalised input.

    Messages count as their type and content (their ids are random on each
    run); the rule is :func:`spanjournal.chunk_ids.derived_chunk_id`.

    >>> unit_chunk_id("research", {"topic": "pricing", "depth": 2}) == unit_chunk_id(
    ...     "research", {"depth": 2, "topic": "pricing"})
    True
    """
    return derived_chunk_id(name, _plain(run_input))


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, BaseMessage):
        return {"type": value.type, "content": _plain(value.content)}
    if isinstance(value, BaseModel):
        return _plain(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    text = repr(value)
    return type(value).__qualname__ if " at 0x" in text else text


def _describe(inputs: Any) -> str:
    """A short text of what a unit was asked: its text input, or its input as JSON."""
    if isinstance(inputs, str):
        return inputs
    return normalised_input(_plain(inputs))


def _run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any]) -> str:
    name = kwargs.get("name")
    if isinstance(name, str) and name:
        return name
    if serialized:
        name = serialized.get("name")
        if isinstance(name, str) and name:
            return name
        ids = serialized.get("id")
        if isinstance(ids, list) and ids:
            return str(ids[-1])
    return "chain"


def _graph_attributes(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """The LangGraph position of a node run, as span attributes (journaled under ``attrs``)."""
    out: dict[str, Any] = {}
    for key in ("langgraph_node", "langgraph_step", "thread_id"):
        value = metadata.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            out[f"langgraph.{key.removeprefix('langgraph_')}"] = value
    return out


def _usage(response: LLMResult) -> tuple[int, int]:
    """Input and output tokens of a model run: its messages' ``usage_metadata``, else ``llm_output``."""
    input_tokens = output_tokens = 0
    found = False
    for generations in response.generations:
        for generation in generations:
            if not isinstance(generation, ChatGeneration):
                continue
            usage = getattr(generation.message, "usage_metadata", None)
            if usage:
                found = True
                input_tokens += int(usage.get("input_tokens") or 0)
                output_tokens += int(usage.get("output_tokens") or 0)
    if not found and isinstance(response.llm_output, Mapping):
        usage = response.llm_output.get("token_usage") or response.llm_output.get("usage")
        if isinstance(usage, Mapping):
            input_tokens = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
            output_tokens = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    return input_tokens, output_tokens
