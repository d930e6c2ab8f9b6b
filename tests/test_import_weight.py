"""The reading side never imports OpenTelemetry: ``import spanjournal`` stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def imported_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; return what it reports about sys.modules."""
    probe = textwrap.dedent(code) + textwrap.dedent(
        """
        import json, sys
        otel = sorted(m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry."))
        print(json.dumps({"otel": otel, "grpc": "grpc" in sys.modules}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    result: dict[str, object] = json.loads(out.splitlines()[-1])
    return result


def test_import_spanjournal_and_reading_do_not_import_opentelemetry(tmp_path: object) -> None:
    result = imported_after(
        """
        import os, tempfile
        import spanjournal
        from spanjournal import ChunkState, Journal, read_ledger, semconv
        import spanjournal.testing
        from spanjournal.testing import MemoryJournal
        path = os.path.join(tempfile.mkdtemp(), "j.jsonl")
        with Journal(path) as j:
            j.append({"event": "subagent_dispatched", "chunk_id": "c-1"})
        assert read_ledger(path).pending() == ["c-1"]
        MemoryJournal().append({"event": "subagent_dispatched", "chunk_id": "c-1"})
        assert "dispatch" in dir(spanjournal)
        """
    )
    assert result == {"otel": [], "grpc": False}


def test_the_tracing_side_loads_on_first_use_without_grpc() -> None:
    result = imported_after(
        """
        import spanjournal
        spanjournal.dispatch
        spanjournal.configure
        spanjournal.JournalSpanProcessor
        """
    )
    otel = result["otel"]
    assert isinstance(otel, list) and "opentelemetry.sdk.trace" in otel
    assert result["grpc"] is False, "the gRPC exporter is imported only when OTLP/gRPC is configured"
