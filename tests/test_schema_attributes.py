"""One table maps the journal's fields to span attributes, both ways.

``semconv.FIELD_ATTRIBUTES`` names, for each schema field a dispatch span
carries, its attribute. The processor writes the field from the attribute
(span -> journal); ``spanjournal export`` writes the attribute back from the
field (journal -> span). A live span with every such attribute set, journaled
and rebuilt, carries each of them again with the same value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Status, StatusCode

from spanjournal import semconv
from spanjournal._schema import Completed, Dispatched
from spanjournal.export import JournalSpan, journal_spans
from spanjournal.processor import JournalSpanProcessor
from spanjournal.testing import MemoryJournal

#: A value for every attribute of the table, none of them a default.
EVERY_FIELD: dict[str, Any] = {
    "chunk_id": "batch-3-case-027",
    "session_id": "session-from-span",
    "task_description": "Route prompt to expected skill",
    "items_assigned": 4,
    "output_file": "responses/027.json",
    "batch": "batch-3",
    "agent": "router",
    "tokens_used": 1234,
    "input_tokens": 1000,
    "output_tokens": 234,
    "error_type": "TimeoutError",
}
START_FIELDS = [name for name in Dispatched.__struct_fields__ if name in semconv.FIELD_ATTRIBUTES]


def live_span(journal: MemoryJournal, *, success: bool) -> None:
    """A dispatch span with every attribute of the table set: the identifying ones at start."""
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_span_processor(JournalSpanProcessor(journal, session_id="session-default", tz="UTC"))
    attribute = semconv.FIELD_ATTRIBUTES
    start = {attribute[name]: EVERY_FIELD[name] for name in START_FIELDS}
    span = provider.get_tracer("test").start_span(
        semconv.span_name("router"), attributes={semconv.GEN_AI_OPERATION_NAME: semconv.INVOKE_AGENT, **start}
    )
    span.set_attributes({attribute[name]: value for name, value in EVERY_FIELD.items() if name not in START_FIELDS})
    if not success:
        span.set_status(Status(StatusCode.ERROR, "timed out"))
    span.end()
    provider.shutdown()


def rebuilt(journal: MemoryJournal, tmp_path: Path) -> JournalSpan:
    path = tmp_path / "run.jsonl"
    path.write_bytes(b"".join(journal.lines))
    (span,) = journal_spans([path])
    return span


def test_every_field_in_the_table_is_a_schema_field() -> None:
    fields = set(Dispatched.__struct_fields__) | set(Completed.__struct_fields__)
    assert set(semconv.FIELD_ATTRIBUTES) <= fields
    assert len(set(semconv.FIELD_ATTRIBUTES.values())) == len(semconv.FIELD_ATTRIBUTES)


def test_every_field_the_processor_reads_from_an_attribute_export_writes_back(tmp_path: Path) -> None:
    journal = MemoryJournal()
    live_span(journal, success=False)
    dispatched, completed = journal.events()
    assert isinstance(dispatched, Dispatched) and isinstance(completed, Completed)
    # span -> journal: each field holds its attribute's value (a field of both events, in both).
    for name, value in EVERY_FIELD.items():
        events = [e for e in (dispatched, completed) if name in type(e).__struct_fields__]
        assert events, name
        assert all(getattr(e, name) == value for e in events), name
    # journal -> span: each attribute is back with the same value, and nothing else changed.
    span = rebuilt(journal, tmp_path)
    assert span.attributes() == {
        semconv.GEN_AI_OPERATION_NAME: semconv.INVOKE_AGENT,
        **{semconv.FIELD_ATTRIBUTES[name]: value for name, value in EVERY_FIELD.items()},
    }


def test_a_successful_span_comes_back_without_an_error_type(tmp_path: Path) -> None:
    journal = MemoryJournal()
    live_span(journal, success=True)
    _, completed = journal.events()
    assert isinstance(completed, Completed) and completed.error_type is None
    attributes = rebuilt(journal, tmp_path).attributes()
    assert semconv.ERROR_TYPE not in attributes
    expected = {name: value for name, value in EVERY_FIELD.items() if name != "error_type"}
    assert {semconv.FIELD_ATTRIBUTES[name]: attributes[semconv.FIELD_ATTRIBUTES[name]] for name in expected} == {
        semconv.FIELD_ATTRIBUTES[name]: value for name, value in expected.items()
    }


def test_an_empty_text_field_is_no_attribute_and_a_completion_does_not_blank_the_output_file(
    tmp_path: Path,
) -> None:
    from spanjournal._schema import encode

    path = tmp_path / "run.jsonl"
    path.write_bytes(
        encode(
            Dispatched(
                ts="2026-05-27T13:22:01+00:00",
                session_id="s",
                chunk_id="c-1",
                task_description="",
                batch="",
                agent="",
                output_file="out/c-1.json",
                trace_id="0af7651916cd43dd8448eb211c80319c",
                span_id="b7ad6b7169203331",
            )
        )
        + encode(
            Completed(ts="2026-05-27T13:22:02+00:00", session_id="s", chunk_id="c-1", success=True, output_file="")
        )
    )
    (span,) = journal_spans([path])
    attributes = span.attributes()
    assert attributes[semconv.OUTPUT_FILE] == "out/c-1.json"
    for empty in (semconv.TASK_DESCRIPTION, semconv.BATCH, semconv.GEN_AI_AGENT_NAME):
        assert empty not in attributes
