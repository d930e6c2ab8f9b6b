"""JournalSampler: sampling decides what is exported, never what is journaled.

A span the sampler drops is never given to a span processor, so the journal
would not see it. :class:`JournalSampler` wraps the configured sampler and
turns its DROP into RECORD_ONLY for the spans the journal needs: dispatch
spans (``spanjournal.chunk_id`` at start), agent spans that an
:class:`~spanjournal.AgentSpans` policy makes units, and, with a policy, the
spans inside a unit that was recorded this way (so the journal still sees
how sub-agents nest). A RECORD_ONLY span reaches the processors but is not
sampled: exporters (``BatchSpanProcessor``) skip it. Export follows the
wrapped sampler exactly; its decisions to sample are returned unchanged.

:func:`spanjournal.configure` wraps the sampler it is given, or the one the
``OTEL_TRACES_SAMPLER`` environment variables choose. For your own provider::

    provider = TracerProvider(sampler=JournalSampler(TraceIdRatioBased(0.1), agent_spans=AgentSpans()))
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from spanjournal import semconv
from spanjournal.agent_spans import AgentSpans

__all__ = ["JournalSampler"]

_DROP = Decision.DROP
_RECORD_ONLY = Decision.RECORD_ONLY
_CHUNK_ID = semconv.CHUNK_ID
_EMPTY: dict[str, object] = {}


class JournalSampler(Sampler):
    """``sampler``'s decisions, except that journaled spans are at least RECORD_ONLY.

    ``agent_spans`` is the policy whose units must be recorded too (None:
    dispatch spans only).
    """

    def __init__(self, sampler: Sampler, agent_spans: AgentSpans | None = None) -> None:
        #: The wrapped sampler: it decides what is exported.
        self.sampler: Sampler = sampler.sampler if isinstance(sampler, JournalSampler) else sampler
        self.agent_spans = agent_spans

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        result = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if result.decision is not _DROP or not self._journaled(parent_context, name, attributes):
            return result
        if trace_state is None:
            trace_state = trace.get_current_span(parent_context).get_span_context().trace_state
        return SamplingResult(_RECORD_ONLY, result.attributes or attributes, result.trace_state or trace_state)

    def _journaled(self, parent_context: Context | None, name: str, attributes: Attributes) -> bool:
        attrs = attributes or _EMPTY
        if _CHUNK_ID in attrs:
            return True
        policy = self.agent_spans
        if policy is None:
            return False
        parent = trace.get_current_span(parent_context)
        if parent.is_recording() and not parent.get_span_context().trace_flags.sampled:
            return True  # inside a span recorded for the journal only: keep the nesting visible
        return policy.agent_of(name, attrs) is not None

    def get_description(self) -> str:
        return f"JournalSampler{{{self.sampler.get_description()}}}"
