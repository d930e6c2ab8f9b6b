"""Span attribute names: the contract between the live spans and the journal.

A dispatch span carries the identifying attributes from its start (a span
processor's ``on_start`` sees only those), the usage and outcome attributes
from before its end. OpenTelemetry's GenAI semantic conventions are used where
they name the thing; everything else of this project is under one prefix,
``spanjournal.``. Anything that rebuilds spans from a journal (``spanjournal
export``) uses the same names, so live and rebuilt spans look alike in Jaeger.

This module imports nothing from OpenTelemetry.

>>> CHUNK_ID
'spanjournal.chunk_id'
>>> span_name("router")
'invoke_agent router'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: The prefix of every project attribute.
PREFIX = "spanjournal."

# -- set at span start (identify the unit of work) ---------------------------
CHUNK_ID = "spanjournal.chunk_id"
SESSION_ID = "spanjournal.session_id"
TASK_DESCRIPTION = "spanjournal.task_description"
ITEMS_ASSIGNED = "spanjournal.items_assigned"
#: The expected output file at start; the actual one (if recorded) at end.
OUTPUT_FILE = "spanjournal.output_file"
BATCH = "spanjournal.batch"

# -- set before span end (outcome) --------------------------------------------
TOKENS_USED = "spanjournal.tokens_used"

# -- OpenTelemetry GenAI semantic conventions ----------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
ERROR_TYPE = "error.type"

#: The journal's fields that a dispatch span carries as attributes: schema field -> attribute.
#: The processor writes each field from its attribute, ``spanjournal export`` each
#: attribute from its field; the fields are those of ``Dispatched`` and ``Completed``
#: in ``spanjournal._schema``.
FIELD_ATTRIBUTES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "chunk_id": CHUNK_ID,
        "session_id": SESSION_ID,
        "task_description": TASK_DESCRIPTION,
        "items_assigned": ITEMS_ASSIGNED,
        "output_file": OUTPUT_FILE,
        "batch": BATCH,
        "agent": GEN_AI_AGENT_NAME,
        "tokens_used": TOKENS_USED,
        "input_tokens": GEN_AI_INPUT_TOKENS,
        "output_tokens": GEN_AI_OUTPUT_TOKENS,
        "error_type": ERROR_TYPE,
    }
)

#: The value of ``gen_ai.operation.name`` on a dispatch span.
INVOKE_AGENT = "invoke_agent"

#: The instrumentation scope name of the spans this library starts.
TRACER_NAME = "spanjournal"


def span_name(agent: str | None) -> str:
    """The span name the GenAI conventions give an agent invocation."""
    return f"{INVOKE_AGENT} {agent}" if agent else INVOKE_AGENT
