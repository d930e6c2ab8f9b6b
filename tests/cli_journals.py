"""Journals to read and commands to run, for the CLI tests."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from spanjournal._process import HOST, proc_start
from spanjournal._schema import Completed, Dispatched, RunPlanned, encode

BIN = Path(sys.executable).parent
TS = "2026-05-27T13:22:01.123456+08:00"
TS_DONE = "2026-05-27T13:22:09.123456+08:00"

Line = Dispatched | Completed | RunPlanned | bytes


def span_of(chunk: str, attempt: int = 1) -> str:
    return hashlib.sha256(f"{chunk}/{attempt}".encode()).hexdigest()[:16]


def trace_of(chunk: str) -> str:
    return hashlib.sha256(chunk.encode()).hexdigest()[:32]


def dispatched(chunk: str, attempt: int = 1, *, session: str = "s1", **fields: Any) -> Dispatched:
    fields.setdefault("ts", TS)
    fields.setdefault("span_id", span_of(chunk, attempt))
    fields.setdefault("trace_id", trace_of(chunk))
    return Dispatched(session_id=session, chunk_id=chunk, **fields)


def running(chunk: str, **fields: Any) -> Dispatched:
    """A dispatch by this (live) test process: the chunk reads as running."""
    pid = os.getpid()
    return dispatched(chunk, host=HOST, pid=pid, proc_start=proc_start(pid), **fields)


def completed(chunk: str, success: bool = True, attempt: int = 1, *, session: str = "s1", **fields: Any) -> Completed:
    fields.setdefault("ts", TS_DONE)
    fields.setdefault("span_id", span_of(chunk, attempt))
    fields.setdefault("trace_id", trace_of(chunk))
    return Completed(session_id=session, chunk_id=chunk, success=success, **fields)


def failed(chunk: str, attempt: int = 1, **fields: Any) -> Completed:
    fields.setdefault("error", "quota exceeded: 429")
    fields.setdefault("error_type", "QuotaError")
    return completed(chunk, False, attempt, **fields)


def write_journal(path: Path, lines: Iterable[Line]) -> Path:
    """Write events (or raw bytes, written as they are) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else encode(line))
    return path


def run(
    script: str, *args: str | Path, cwd: Path | None = None, prefix: Sequence[str] = (), **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run an installed console script (``pending``, ``spanjournal``) as users do, after ``prefix``."""
    return subprocess.run(
        [*prefix, str(BIN / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
        **kwargs,
    )


def assert_clean_exit(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
