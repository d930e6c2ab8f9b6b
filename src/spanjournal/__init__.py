"""spanjournal: recoverable parallel sub-agent fan-out.

Every sub-agent call becomes an OpenTelemetry span; a custom span processor
mirrors its start and end into an append-only JSONL journal, so that after a
crash :func:`read_ledger` answers "what must I retry?".

The reading side (``read_ledger``, ``Journal``, the schema) does not import
OpenTelemetry; every name is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spanjournal._schema import SCHEMA_VERSION, Completed, Dispatched, RunPlanned
    from spanjournal.agent_spans import AgentSpans
    from spanjournal.config import Spanjournal, configure
    from spanjournal.instrument import (
        DispatchHandle,
        StartedDispatch,
        current_dispatch,
        dispatch,
        dispatch_span,
        start_dispatch,
    )
    from spanjournal.integrations.openai_agents import instrument_openai_agents
    from spanjournal.journal import Journal, JournalWriteError
    from spanjournal.ledger import Attempt, Chunk, ChunkState, Ledger, read_ledger
    from spanjournal.processor import JournalSpanProcessor
    from spanjournal.reader import JournalReadError, ReadIssue
    from spanjournal.sampling import JournalSampler

__version__ = "0.1.0"

# Every name is loaded on first access, so that ``import spanjournal.cli``
# costs only what the command uses; the names of the tracing side import
# the OpenTelemetry SDK.
_LAZY = {
    "SCHEMA_VERSION": "spanjournal._schema",
    "Completed": "spanjournal._schema",
    "Dispatched": "spanjournal._schema",
    "RunPlanned": "spanjournal._schema",
    "Journal": "spanjournal.journal",
    "JournalWriteError": "spanjournal.journal",
    "Attempt": "spanjournal.ledger",
    "Chunk": "spanjournal.ledger",
    "ChunkState": "spanjournal.ledger",
    "Ledger": "spanjournal.ledger",
    "read_ledger": "spanjournal.ledger",
    "JournalReadError": "spanjournal.reader",
    "ReadIssue": "spanjournal.reader",
    "configure": "spanjournal.config",
    "Spanjournal": "spanjournal.config",
    "dispatch": "spanjournal.instrument",
    "dispatch_span": "spanjournal.instrument",
    "current_dispatch": "spanjournal.instrument",
    "DispatchHandle": "spanjournal.instrument",
    "JournalSpanProcessor": "spanjournal.processor",
    "AgentSpans": "spanjournal.agent_spans",
    "JournalSampler": "spanjournal.sampling",
    "StartedDispatch": "spanjournal.instrument",
    "start_dispatch": "spanjournal.instrument",
    "instrument_openai_agents": "spanjournal.integrations.openai_agents",
}

__all__ = [
    "SCHEMA_VERSION",
    "AgentSpans",
    "Attempt",
    "Chunk",
    "ChunkState",
    "Completed",
    "DispatchHandle",
    "Dispatched",
    "Journal",
    "JournalReadError",
    "JournalSampler",
    "JournalSpanProcessor",
    "JournalWriteError",
    "Ledger",
    "ReadIssue",
    "RunPlanned",
    "Spanjournal",
    "StartedDispatch",
    "configure",
    "current_dispatch",
    "dispatch",
    "dispatch_span",
    "instrument_openai_agents",
    "read_ledger",
    "start_dispatch",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'spanjournal' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
