"""The Claude Agent SDK hook callbacks behind :func:`spanjournal.claude.hooks`.

Each sub-agent call is a dispatch of :mod:`spanjournal.instrument`
(``dispatch_span``), started by the ``PreToolUse`` callback and ended by the
``PostToolUse``/``PostToolUseFailure`` one: the journal lines, the strictness
and the span are the decorator's own. The two callbacks run as separate
tasks, so each dispatch lives in a context of its own (a copy, entered and
exited with ``Context.run``), and the caller's context is never changed.

Without a current span, a dispatch's parent is the Claude session: a remote
parent with the session's trace id (all sub-agents of a session share a
trace, as with the command hook) and a span id derived from the session,
which no process records.
"""

from __future__ import annotations

import contextvars
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from spanjournal import config
from spanjournal._process import self_identity
from spanjournal.claude import (
    ATTR_SESSION_ID,
    ATTR_TOOL_USE_ID,
    HookPayloadError,
    SubagentCall,
    answer_text,
    completed_event,
    deny_output,
    deny_reason,
    done_answer,
    keep_answer,
    launched_in_background,
    now_ts,
    output_path,
    parse_hook_input,
    session_span_id_for,
    trace_id_for,
)
from spanjournal.instrument import DispatchHandle, DispatchSpan, dispatch_span
from spanjournal.journal import JournalWriteError

logger = logging.getLogger("spanjournal")


def configured_for(journal: str | os.PathLike[str] | None) -> config.Spanjournal:
    """The configuration whose journal is ``journal`` (the active one when None); configures one if needed."""
    current = config.current()
    if journal is None:
        return current if current is not None else config.configure()
    if current is None:
        return config.configure(journal=journal)
    path = getattr(current.journal, "path", None)
    if path is not None and os.path.abspath(path) == os.path.abspath(journal):
        return current
    raise ValueError(
        f"spanjournal is configured with another journal ({path}); "
        "call spanjournal.claude.hooks() without journal= to use it"
    )


@dataclass
class _Running:
    """A sub-agent between its PreToolUse and its PostToolUse."""

    context: contextvars.Context
    span: DispatchSpan
    handle: DispatchHandle
    output_file: Path | None


class SdkHooks:
    """The callbacks of one :func:`spanjournal.claude.hooks` mapping."""

    def __init__(self, sj: config.Spanjournal, *, skip_done: bool, strict: bool) -> None:
        path = getattr(sj.journal, "path", None)
        if skip_done and path is None:
            raise ValueError("skip_done needs a journal file to read; pass skip_done=False for this journal")
        self.journal_path: Path | None = Path(path) if path is not None else None
        self.skip_done = skip_done
        self.strict = strict
        self._running: dict[str, _Running] = {}

    async def pre_tool_use(self, input_data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        """``PreToolUse``: deny a finished sub-agent, else journal its dispatch before it runs."""
        call = self._call(input_data)
        if call is None or call.event != "PreToolUse":
            return {}
        try:
            if self.skip_done and self.journal_path is not None:
                answer = done_answer(self.journal_path, call.chunk_id)
                if answer is not None:
                    return deny_output(deny_reason(call.chunk_id, answer))
            expected = output_path(self.journal_path, call.chunk_id) if self.journal_path is not None else None
            span = dispatch_span(
                call.chunk_id,
                task_description=call.description,
                agent_name=call.subagent_type,
                output_file=expected,
                attributes={ATTR_SESSION_ID: call.session_id, ATTR_TOOL_USE_ID: call.tool_use_id},
                strict=self.strict,
            )
            run_context = contextvars.copy_context()
            handle = run_context.run(_start, span, call)
        except Exception as exc:
            if not self.strict:
                logger.error("spanjournal: sub-agent %s runs unjournaled: %s", call.chunk_id, exc)
                return {}
            what = "could not be journaled" if isinstance(exc, JournalWriteError) else "failed"
            return deny_output(f"spanjournal: the sub-agent was not run: its dispatch {what}: {exc}")
        self._running[call.tool_use_id] = _Running(run_context, span, handle, expected)
        return {}

    async def post_tool_use(self, input_data: Any, tool_use_id: str | None, context: Any) -> dict[str, Any]:
        """``PostToolUse``/``PostToolUseFailure``: keep the answer, end the dispatch."""
        call = self._call(input_data)
        if call is None or call.event == "PreToolUse":
            return {}
        running = self._running.pop(call.tool_use_id, None)
        if running is None:
            return {}
        if call.event == "PostToolUse" and launched_in_background(call.tool_response):
            return {}  # the sub-agent has not finished: its dispatch stays open
        try:
            host, pid, _ = self_identity()
            outcome = completed_event(call, ts=now_ts(), host=host, pid=pid, output_file=None)
            output_file = None
            text = answer_text(call.tool_response) if outcome.success else None
            if text is not None and running.output_file is not None:
                keep_answer(running.output_file, text)
                output_file = running.output_file
            running.handle.record(
                success=outcome.success,
                error=outcome.error,
                error_type=outcome.error_type,
                output_file=output_file,
                tokens_used=outcome.tokens_used,
                input_tokens=outcome.input_tokens,
                output_tokens=outcome.output_tokens,
            )
        except Exception as exc:
            logger.error("spanjournal: the completion of sub-agent %s is incomplete: %s", call.chunk_id, exc)
        running.context.run(running.span.__exit__, None, None, None)
        return {}

    @staticmethod
    def _call(input_data: Any) -> SubagentCall | None:
        try:
            return parse_hook_input(input_data)
        except HookPayloadError as exc:
            logger.warning("spanjournal: hook input ignored: %s", exc)
            return None


def _start(span: DispatchSpan, call: SubagentCall) -> DispatchHandle:
    """Enter ``span`` in the current (copied) context, under the Claude session when no span is current."""
    if not trace.get_current_span().get_span_context().is_valid:
        session = SpanContext(
            int(trace_id_for(call.session_id), 16),
            int(session_span_id_for(call.session_id), 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
        )
        context_api.attach(trace.set_span_in_context(NonRecordingSpan(session)))
    return span.__enter__()
