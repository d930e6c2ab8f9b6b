"""LangChain / LangGraph integration: ``from spanjournal.langchain import JournalCallbackHandler``.

See :mod:`spanjournal.integrations.langchain`. Importing this module imports ``langchain_core``.
"""

from __future__ import annotations

from spanjournal.integrations.langchain import (
    DEFAULT_CHUNK_ID_KEY,
    DEFAULT_UNIT_KEY,
    JournalCallbackHandler,
    unit_chunk_id,
)

__all__ = ["DEFAULT_CHUNK_ID_KEY", "DEFAULT_UNIT_KEY", "JournalCallbackHandler", "unit_chunk_id"]
