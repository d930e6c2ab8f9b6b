"""``spanjournal reconcile``: unfinished chunks whose output is already there.

A sub-agent may write its output file and die before its completion is
journaled. For each unfinished chunk that names an output file, reconcile
checks that the file is under the root, is a regular file written after the
dispatch, and validates; with ``--apply`` it appends a ``subagent_completed``
event (``success``, ``reconciled``, the ``validation`` used, and the
attempt's trace and span ids). The journal is only ever appended to.
"""

from __future__ import annotations

import argparse
import enum
import errno
import importlib
import os
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from spanjournal._process import HOST
from spanjournal._schema import Completed
from spanjournal.cli._command import EXIT_OK, CliError, add_command, add_read_options, read_journals
from spanjournal.cli._output import plural, text_table
from spanjournal.journal import Journal, JournalWriteError
from spanjournal.ledger import Chunk, ChunkState, Ledger
from spanjournal.reader import JournalReadError, resolve_paths

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
Find unfinished chunks (dispatched, never completed) whose output file
already exists and is valid, and record them done.

For each unfinished chunk whose dispatch (or an earlier completion) names an
output file, the file must
  - be under --root (default: the journal's directory): paths with `..`,
    absolute paths elsewhere and symlinks leading out are refused;
  - be a regular file modified after the dispatch (not a previous run's);
  - validate: json (one whole JSON document: a partial write fails),
    jsonl (every line JSON, ending in a newline), nonempty, or
    MODULE:FUNC, a function called with the file's pathlib.Path that
    returns true for a valid file. Default: by extension (.json -> json,
    .jsonl/.ndjson -> jsonl, else nonempty).

Without --apply, prints what it would do and why. With --apply, appends one
`subagent_completed` event per valid output (success: true, reconciled:
true, validation, the attempt's trace_id and span_id; ts is the output
file's modification time). The journal is never rewritten."""

EPILOG = """\
examples:
  spanjournal reconcile runs/bench.jsonl
  spanjournal reconcile runs/bench.jsonl --apply
  spanjournal reconcile runs/bench.jsonl --root . --validate json --apply
  spanjournal reconcile runs/bench.jsonl --validate checks:answer_is_ranked --json
"""

#: How much earlier than its dispatch an output file may look (coarse file system clocks).
MTIME_SLACK = timedelta(seconds=2)

Validator = Callable[[Path, int], tuple[bool, str]]


class Verdict(str, enum.Enum):
    """What reconcile does with an unfinished chunk."""

    VALID = "valid"
    INVALID = "invalid"
    MISSING = "missing"
    REFUSED = "refused"
    NO_OUTPUT = "no_output"
    RUNNING = "running"

    def __str__(self) -> str:
        return self.value


@dataclass
class Decision:
    """One unfinished (or running) chunk: what reconcile found and why."""

    chunk: Chunk
    verdict: Verdict
    reason: str
    output_file: str | None = None
    validation: str | None = None
    #: The output file's modification time, for a valid one.
    finished_at: datetime | None = None
    recorded: bool = False

    @property
    def chunk_id(self) -> str:
        return self.chunk.chunk_id

    def as_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "output_file": self.output_file,
            "verdict": self.verdict.value,
            "reason": self.reason,
            "validation": self.validation,
            "recorded": self.recorded,
        }


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal reconcile``."""
    parser = add_command(
        subparsers,
        "reconcile",
        help="record unfinished chunks whose output files are already valid",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    parser.add_argument("journal", metavar="JOURNAL", help="the journal file to check and append to")
    parser.add_argument("--root", metavar="DIR", help="directory output paths are relative to and confined to")
    parser.add_argument(
        "--validate",
        metavar="json|jsonl|nonempty|MODULE:FUNC",
        default="auto",
        help="how to tell a complete output (default: by file extension)",
    )
    parser.add_argument("--apply", action="store_true", help="append the completions (default: only show them)")
    parser.add_argument("--json", action="store_true", help="print the decisions as a JSON array")
    add_read_options(parser)


def run(args: argparse.Namespace) -> int:
    journal = _one_journal(args.journal)
    root = Path(args.root) if args.root is not None else journal.parent
    if not root.is_dir():
        raise CliError(f"--root {args.root}: not a directory")
    validation = resolve_validation(args.validate)
    read = read_journals([str(journal)], checkpoint=not args.no_checkpoint)
    decisions = decide(read.ledger, root, validation)
    valid = [d for d in decisions if d.verdict is Verdict.VALID]
    if args.apply and valid:
        append_completions(journal, valid)
    if args.json:
        sys.stdout.write(msgspec.json.encode([d.as_dict() for d in decisions]).decode() + "\n")
    elif decisions:
        sys.stdout.write(table(decisions, applied=args.apply))
    sys.stderr.write(summary(decisions, applied=args.apply) + "\n")
    return EXIT_OK


def _one_journal(arg: str) -> Path:
    try:
        files = resolve_paths([arg])
    except JournalReadError as exc:
        raise CliError(str(exc)) from None
    if len(files) != 1:
        raise CliError(f"{arg}: holds {len(files)} journals; reconcile appends to one, name the file")
    return files[0]


# -- deciding -------------------------------------------------------------


def decide(ledger: Ledger, root: Path, validation: Validation) -> list[Decision]:
    """A decision for every unfinished or running chunk, in ledger order."""
    out = []
    for chunk_id in ledger.pending([ChunkState.UNFINISHED, ChunkState.RUNNING]):
        chunk = ledger[chunk_id]
        if chunk.state is ChunkState.UNFINISHED:
            out.append(check_chunk(chunk, root, validation))
        else:
            d = chunk.dispatch
            where = f"pid {d.pid} on {d.host}" if d is not None else "its process"
            out.append(Decision(chunk, Verdict.RUNNING, f"still running ({where}): left alone", chunk.output_file))
    return out


def check_chunk(chunk: Chunk, root: Path, validation: Validation) -> Decision:
    output = chunk.output_file
    where = chunk.output_path(root)
    if output is None or where is None:
        return Decision(chunk, Verdict.NO_OUTPUT, "no output file named in the journal")
    # confine() takes a path under the root as relative to it, and an absolute one as it is
    target = os.fspath(where) if where.is_absolute() and Path(output).is_absolute() else os.path.relpath(where, root)
    path, refusal = confine(root, target)
    if path is None:
        return Decision(chunk, Verdict.REFUSED, f"refused: {refusal}", output)
    name, check = validation.for_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return Decision(chunk, Verdict.MISSING, f"output file missing (looked for at {where})", output)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Decision(chunk, Verdict.REFUSED, "refused: the output file became a symlink", output)
        return Decision(chunk, Verdict.INVALID, f"cannot open: {exc.strerror}", output)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return Decision(chunk, Verdict.INVALID, "not a regular file", output)
        modified = datetime.fromtimestamp(st.st_mtime, timezone.utc).astimezone()
        dispatched = _parse_ts(chunk.dispatch.ts if chunk.dispatch is not None else None)
        if dispatched is not None and modified < dispatched - MTIME_SLACK:
            return Decision(chunk, Verdict.INVALID, "older than the dispatch (a previous run's file?)", output)
        ok, why = check(path, fd)
    finally:
        os.close(fd)
    if not ok:
        return Decision(chunk, Verdict.INVALID, f"invalid ({name}): {why}", output, name)
    return Decision(chunk, Verdict.VALID, f"valid ({name})", output, name, finished_at=modified)


def confine(root: Path, output_file: str) -> tuple[Path | None, str]:
    """The real path of ``output_file`` if it stays under ``root``, else ``(None, why)``.

    Relative paths are taken from ``root``. Refused: a ``..`` that climbs
    out, an absolute path elsewhere, a symlink (anywhere on the path) that
    leads out.
    """
    if "\0" in output_file:
        return None, "a NUL byte in the path"
    lexical_root = Path(os.path.abspath(root))
    real_root = root.resolve()
    given = Path(output_file)
    if given.is_absolute():
        lexical = Path(os.path.normpath(given))
        if not (lexical.is_relative_to(lexical_root) or lexical.is_relative_to(real_root)):
            return None, "absolute path outside the root"
    else:
        lexical = Path(os.path.normpath(lexical_root / given))
        if not lexical.is_relative_to(lexical_root):
            return None, "'..' leads outside the root"
    real = (real_root / given).resolve() if not given.is_absolute() else given.resolve()
    if not real.is_relative_to(real_root):
        return None, "a symlink leads outside the root"
    return real, ""


def _parse_ts(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.astimezone()


# -- validating -----------------------------------------------------------


def _read_all(fd: int) -> bytes:
    chunks = []
    while block := os.read(fd, 1 << 20):
        chunks.append(block)
    return b"".join(chunks)


def validate_json(path: Path, fd: int) -> tuple[bool, str]:
    """One whole JSON document: a write cut short does not parse."""
    data = _read_all(fd)
    if not data.strip():
        return False, "empty file"
    try:
        msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        return False, str(exc)
    return True, ""


def validate_jsonl(path: Path, fd: int) -> tuple[bool, str]:
    """JSON Lines: at least one line, every line JSON, the last one ended by a newline."""
    data = _read_all(fd)
    if not data.strip():
        return False, "empty file"
    if not data.endswith(b"\n"):
        return False, "last line not terminated (a write cut short?)"
    for number, line in enumerate(data.split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            return False, f"line {number}: {exc}"
    return True, ""


def validate_nonempty(path: Path, fd: int) -> tuple[bool, str]:
    """Any content at all."""
    return (True, "") if os.fstat(fd).st_size > 0 else (False, "empty file")


BUILTIN_VALIDATORS: dict[str, Validator] = {
    "json": validate_json,
    "jsonl": validate_jsonl,
    "nonempty": validate_nonempty,
}


def validator_for(path: Path) -> str:
    """The built-in validator for a file's extension."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "nonempty"


@dataclass(frozen=True)
class Validation:
    """How outputs are validated: a built-in by name, a ``MODULE:FUNC``, or ``auto`` (by extension)."""

    name: str
    check: Validator | None = None

    def for_file(self, path: Path) -> tuple[str, Validator]:
        """The name recorded in the completion's ``validation`` field, and the check to run."""
        if self.check is not None:
            return self.name, self.check
        name = validator_for(path) if self.name == "auto" else self.name
        return name, BUILTIN_VALIDATORS[name]


def resolve_validation(spec: str) -> Validation:
    """``--validate``: ``auto``, a built-in name, or ``MODULE:FUNC``.

    ``MODULE`` is imported with the current directory on ``sys.path``;
    ``FUNC(path)`` returns true for a valid file, and an exception it raises
    counts as invalid.
    """
    if spec == "auto" or spec in BUILTIN_VALIDATORS:
        return Validation(spec)
    module_name, sep, func_name = spec.partition(":")
    if not sep or not module_name or not func_name:
        raise CliError(f"--validate {spec}: expected json, jsonl, nonempty or MODULE:FUNC")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise CliError(f"--validate {spec}: cannot import {module_name}: {exc}") from None
    func: Any = module
    for part in func_name.split("."):
        func = getattr(func, part, None)
        if func is None:
            raise CliError(f"--validate {spec}: {module_name} has no {func_name}")
    if not callable(func):
        raise CliError(f"--validate {spec}: {func_name} is not callable")
    user_check: Callable[[Path], object] = func

    def validate_custom(path: Path, fd: int) -> tuple[bool, str]:
        try:
            ok = user_check(path)
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return (True, "") if ok else (False, f"{func_name} returned {ok!r}")

    return Validation(spec, validate_custom)


# -- recording ------------------------------------------------------------


def reconciled_completion(decision: Decision) -> Completed:
    """The ``subagent_completed`` event recording a valid output, paired with the chunk's latest attempt."""
    chunk = decision.chunk
    d = chunk.dispatch
    finished = decision.finished_at or datetime.now().astimezone()
    return Completed(
        ts=finished.isoformat(timespec="microseconds"),
        session_id=d.session_id if d is not None else "",
        chunk_id=chunk.chunk_id,
        success=True,
        output_file=decision.output_file,
        trace_id=d.trace_id if d is not None else None,
        span_id=d.span_id if d is not None else None,
        host=HOST,
        pid=os.getpid(),
        reconciled=True,
        validation=decision.validation,
    )


def append_completions(journal: Path, decisions: list[Decision]) -> None:
    """Append one reconciled completion per decision, durably (fsync)."""
    try:
        with Journal(journal, durability="fsync") as j:
            for decision in decisions:
                j.append(reconciled_completion(decision))
                decision.recorded = True
    except JournalWriteError as exc:
        done = sum(d.recorded for d in decisions)
        raise CliError(f"{exc.strerror or exc} ({done} of {len(decisions)} recorded before the error)") from None


# -- printing -------------------------------------------------------------


def _action(decision: Decision, applied: bool) -> str:
    if decision.verdict is Verdict.VALID:
        return "recorded done" if decision.recorded else ("NOT recorded" if applied else "would record done")
    return "left pending" if decision.verdict is not Verdict.RUNNING else "left running"


def table(decisions: list[Decision], *, applied: bool) -> str:
    rows = [(d.chunk_id, d.output_file or "-", _action(d, applied), d.reason) for d in decisions]
    return text_table(("CHUNK", "OUTPUT", "ACTION", "WHY"), rows)


def summary(decisions: list[Decision], *, applied: bool) -> str:
    unfinished = [d for d in decisions if d.verdict is not Verdict.RUNNING]
    valid = sum(d.verdict is Verdict.VALID for d in decisions)
    refused = sum(d.verdict is Verdict.REFUSED for d in decisions)
    head = f"{valid} of {plural(len(unfinished), 'unfinished chunk')} with a valid output"
    if applied:
        head += f": {sum(d.recorded for d in decisions)} recorded done"
    elif valid:
        head += ": run again with --apply to record them done"
    notes = []
    if refused:
        notes.append(f"{refused} refused: outside the root")
    running = len(decisions) - len(unfinished)
    if running:
        notes.append(f"{running} still running")
    return head + (f" ({', '.join(notes)})" if notes else "")
