"""``pending``: the chunk ids to retry, one per line.

stdout holds only the ids (pipe it to ``xargs``); a one-line summary and any
warnings go to stderr. The plain path reads only the fields that decide
states (``read_ledger(detail=False)``); ``--json`` reads the details of each
chunk's latest attempt.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from spanjournal.cli._command import EXIT_OK, EXIT_PENDING, add_command, read_journals
from spanjournal.cli._output import plural, read_summary
from spanjournal.ledger import PENDING_STATES, ChunkState, Ledger

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
List the chunks to retry: unfinished (dispatched, never completed), failed
(latest attempt failed) and never dispatched (planned or --expect'ed), in
first-dispatch order. Chunks whose process is still alive are `running`,
not pending. Several journals (one per host or worker) are merged.

stdout: the chunk ids, one per line, nothing else.
stderr: a one-line summary, and warnings for lines that were skipped.
exit:   0, or 1 with --exit-code when anything is pending;
        2 for usage errors and journals that cannot be read."""

EPILOG = """\
examples:
  pending runs/bench.jsonl
  pending runs/bench.jsonl | xargs -n1 python run_case.py
  pending runs/ --state failed --json
  pending runs/host-*.jsonl --expect cases.txt --exit-code || echo "work left"
"""

#: The states ``--state`` accepts (every state but done), in the order the summary lists them.
STATE_ORDER = (
    ChunkState.UNFINISHED,
    ChunkState.FAILED,
    ChunkState.NEVER_DISPATCHED,
    ChunkState.RUNNING,
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
    parser.add_argument("--exit-code", action="store_true", help="exit 1 when anything is pending")


def run(args: argparse.Namespace) -> int:
    wanted = frozenset(ChunkState(s) for s in args.state) if args.state else PENDING_STATES
    read = read_journals(
        args.journals,
        expect=args.expect,
        session=args.session,
        detail=bool(args.json),
        keep_attempts=False,
    )
    ledger = read.ledger
    ids, counts = select(ledger, wanted)
    if args.json:
        write_json(ledger, ids, sys.stdout)
    elif ids:
        sys.stdout.write("\n".join(ids) + "\n")
    sys.stderr.write(summary(ids, counts, wanted, read.ledger) + "\n")
    return EXIT_PENDING if args.exit_code and ids else EXIT_OK


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
    label = "selected" if ChunkState.RUNNING in wanted else "pending"
    head = f"{len(ids)} {label}"
    parts = [f"{counts[s]} {_state_words(s)}" for s in STATE_ORDER if s in wanted and counts[s]]
    if parts:
        head += ": " + ", ".join(parts)
    notes = [plural(sum(counts.values()), "chunk")]
    if ChunkState.RUNNING not in wanted and counts[ChunkState.RUNNING]:
        notes.append(f"{counts[ChunkState.RUNNING]} still running")
    notes.extend(read_summary(ledger.stats))
    return f"{head} ({', '.join(notes)})"


def _state_words(state: ChunkState) -> str:
    return state.value.replace("_", " ")


def pending_record(ledger: Ledger, chunk_id: str) -> dict[str, Any]:
    """The ``--json`` object of one chunk."""
    chunk = ledger[chunk_id]
    return {
        "chunk_id": chunk.chunk_id,
        "state": chunk.state.value,
        "attempts": chunk.attempt_count,
        "last_error": chunk.last_error,
        "error_type": chunk.error_type,
        "output_file": chunk.output_file,
        "last_ts": chunk.last_ts,
        "trace_id": chunk.trace_id,
        "agent": chunk.dispatch.agent if chunk.dispatch is not None else None,
    }


def write_json(ledger: Ledger, ids: list[str], out: TextIO) -> None:
    """A JSON array, one chunk object per line."""
    encode = msgspec.json.encode
    if not ids:
        out.write("[]\n")
        return
    out.write("[\n")
    last = len(ids) - 1
    for i, cid in enumerate(ids):
        out.write(encode(pending_record(ledger, cid)).decode())
        out.write(",\n" if i < last else "\n")
    out.write("]\n")
