"""``pending``: the chunk ids to retry, one per line.

stdout holds only the ids (pipe it to ``xargs``); a one-line summary and any
warnings go to stderr. Plain and ``--json`` read the same fold (and its
checkpoint); ``--json`` asks it for the details of each chunk listed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO

import msgspec

from spanjournal.cli import hold_until_exit
from spanjournal.cli._command import EXIT_OK, EXIT_PENDING, add_command, add_read_options, read_journals
from spanjournal.cli._output import escape_id, plural, read_summary
from spanjournal.ledger import PENDING_STATES, ChunkState, Ledger

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
List the chunks to retry: unfinished (dispatched, never completed), failed
(latest attempt failed) and never dispatched (planned or --expect'ed), in
first-dispatch order. Chunks whose process is still alive are `running`,
not pending. Several journals (one per host or worker) are merged.

stdout: the chunk ids, one per line, nothing else (an id holding a
        control character such as a newline is printed JSON-quoted).
stderr: a one-line summary, and warnings for lines that were skipped.
exit:   0, or 1 with --exit-code when anything is pending or the journals
        hold no dispatch at all (an empty journal, or the wrong file?);
        2 for usage errors and files that cannot be read or are not journals."""

EPILOG = """\
examples:
  pending runs/bench.jsonl
  pending runs/bench.jsonl | xargs -n1 python run_case.py
  pending runs/ --state failed --json
  pending .claude/spanjournal/subagents.jsonl --describe
  pending runs/host-*.jsonl --expect cases.txt --exit-code || echo "work left"
"""

#: The states ``--state`` accepts, in the order the summary lists them.
STATE_ORDER = (
    ChunkState.UNFINISHED,
    ChunkState.FAILED,
    ChunkState.NEVER_DISPATCHED,
    ChunkState.RUNNING,
    ChunkState.DONE,
)


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal pending``."""
    parser = add_command(
        subparsers,
        "pending",
        help="list the chunk ids to retry",
        description=DESCRIPTION,
        epilog=EPILOG.replace("  pending ", "  spanjournal pending "),
        handler=run,
    )
    add_arguments(parser)


def standalone_parser() -> argparse.ArgumentParser:
    """The parser of the ``pending`` console script."""
    parser = argparse.ArgumentParser(
        prog="pending",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=run, prog="pending")
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "journals", nargs="+", metavar="JOURNAL", help="journal files, directories of *.jsonl, or globs"
    )
    parser.add_argument(
        "--state",
        action="append",
        choices=[s.value for s in STATE_ORDER],
        help="list only chunks in this state (repeatable; default: unfinished, failed, never_dispatched)",
    )
    parser.add_argument(
        "--expect", metavar="FILE", help="chunk ids, one per line, that should exist: missing ones are pending"
    )
    parser.add_argument("--session", metavar="ID", help="only events of this session id")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON array of objects: chunk_id, state, attempts, last_error, error_type, "
        "output_file, last_ts, trace_id, agent",
    )
    parser.add_argument("--describe", action="store_true", help="print each chunk id, a tab, and its task description")
    parser.add_argument(
        "--exit-code", action="store_true", help="exit 1 when anything is pending (or nothing was ever dispatched)"
    )
    add_read_options(parser)


def run(args: argparse.Namespace) -> int:
    wanted = frozenset(ChunkState(s) for s in args.state) if args.state else PENDING_STATES
    read = read_journals(
        args.journals,
        expect=args.expect,
        session=args.session,
        checkpoint=not args.no_checkpoint,
        jobs=args.jobs,
    )
    ledger = read.ledger
    hold_until_exit(ledger)
    ids, counts = select(ledger, wanted)
    if args.json:
        write_json(ledger, ids, sys.stdout)
    elif args.describe and ids:
        for start in range(0, len(ids), _JSON_PAGE):
            chunks = ledger.chunks(ids[start : start + _JSON_PAGE])
            sys.stdout.write("".join(f"{escape_id(c.chunk_id)}\t{_one_line(c.task_description)}\n" for c in chunks))
    elif ids:
        escaped = [escape_id(c) for c in ids]
        sys.stdout.write("\n".join(escaped) + "\n")
        quoted = sum(1 for a, b in zip(ids, escaped) if a is not b)
        if quoted:
            sys.stderr.write(f"warning: {plural(quoted, 'chunk id')} with control characters printed JSON-quoted\n")
    sys.stderr.write(summary(ids, counts, wanted, read.ledger) + "\n")
    nothing_run = not ledger.fold.has_chunks()
    if nothing_run:
        sys.stderr.write(f"warning: {_nothing_run(read.ledger)}\n")
    return EXIT_PENDING if args.exit_code and (ids or nothing_run) else EXIT_OK


def _nothing_run(ledger: Ledger) -> str:
    if not ledger.stats.lines:
        return "the journal is empty: nothing was ever dispatched (is this the right file?)"
    return "no chunk was ever dispatched or completed in these journals (is this the right file?)"


def select(ledger: Ledger, wanted: Iterable[ChunkState]) -> tuple[list[str], dict[ChunkState, int]]:
    """The chunk ids in ``wanted`` states, in ledger order, and how many chunks are in each state.

    Only chunks not done are looked at one by one (``Ledger.pending``); done
    ones are counted as the rest.
    """
    counts = dict.fromkeys(ChunkState, 0)
    counts.update(ledger.counts())
    return ledger.pending(wanted), counts


def summary(ids: list[str], counts: dict[ChunkState, int], wanted: Iterable[ChunkState], ledger: Ledger) -> str:
    """``4 pending: 3 unfinished, 1 failed (50 chunks, 1 torn line skipped)``."""
    wanted = frozenset(wanted)
    label = "selected" if wanted & {ChunkState.RUNNING, ChunkState.DONE} else "pending"
    head = f"{len(ids):,} {label}"
    parts = [f"{counts[s]:,} {_state_words(s)}" for s in STATE_ORDER if s in wanted and counts[s]]
    if parts:
        head += ": " + ", ".join(parts)
    notes = [plural(sum(counts.values()), "chunk")]
    if ChunkState.RUNNING not in wanted and counts[ChunkState.RUNNING]:
        notes.append(f"{counts[ChunkState.RUNNING]:,} still running")
    notes.extend(read_summary(ledger.stats))
    return f"{head} ({', '.join(notes)})"


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text else ""


def _state_words(state: ChunkState) -> str:
    return state.value.replace("_", " ")


class PendingRecord(msgspec.Struct):
    """One chunk of ``pending --json`` (the keys in this order; absent values are ``null``)."""

    chunk_id: str
    state: ChunkState
    attempts: int
    last_error: str | None
    error_type: str | None
    output_file: str | None
    last_ts: str | None
    trace_id: str | None
    agent: str | None


def pending_records(ledger: Ledger, chunk_ids: list[str]) -> list[PendingRecord]:
    """The ``--json`` objects of chunks (their events read in one pass)."""
    return [
        PendingRecord(
            c.chunk_id,
            c.state,
            c.attempt_count,
            c.last_error,
            c.error_type,
            c.output_file,
            c.last_ts,
            c.trace_id,
            c.dispatch.agent if c.dispatch is not None else None,
        )
        for c in ledger.chunks(chunk_ids)
    ]


#: Chunks whose events are read again at a time for ``--json``.
_JSON_PAGE = 4096


def write_json(ledger: Ledger, ids: list[str], out: TextIO) -> None:
    """A JSON array, one chunk object per line (nothing written before the first page is read)."""
    if not ids:
        out.write("[]\n")
        return
    encode_lines = msgspec.json.Encoder().encode_lines
    for start in range(0, len(ids), _JSON_PAGE):
        records = pending_records(ledger, ids[start : start + _JSON_PAGE])
        # One object a line; a newline inside a string is escaped, so every newline here ends an object.
        body = encode_lines(records).decode()[:-1].replace("\n", ",\n")
        out.write(("[\n" if start == 0 else ",\n") + body)
    out.write("\n]\n")
