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
from spanjournal.cli import hold_until_exit
from spanjournal.cli._command import EXIT_OK, CliError, add_command, add_read_options, read_journals
from spanjournal.cli._output import plural, text_table
from spanjournal.journal import Journal, JournalWriteError
from spanjournal.ledger import Chunk, ChunkState, Ledger, output_location
from spanjournal.reader import JournalReadError, resolve_paths

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

DESCRIPTION = """\
Find unfinished chunks (dispatched, never completed) whose output file
already exists and is valid, and record them done.

For each unfinished chunk whose dispatch (or an earlier completion) names an
output file, the file must
  - be under the root: --root DIR if given, else under the journal's
    directory or the working directory the dispatching process recorded
    (cwd). A relative output path is taken from that recorded cwd (what it
    meant to the process that wrote it), else from --root, else from the
    journal's directory. Paths whose `..` leads out, absolute paths
    elsewhere, and any symlink on the way (none is followed, at any level)
    are refused;
  - be a regular file modified after the dispatch (not a previous run's);
  - validate: json (one whole JSON document: a partial write fails; at
    most 256 MiB, larger ones are left pending with that reason),
    jsonl (every line JSON, ending in a newline; read in 1 MiB blocks),
    nonempty, or MODULE:FUNC, a function called with a pathlib.Path that
    opens the very file checked (on Linux /proc/self/fd/N) and returns
    true for a valid file. Default: by extension (.json -> json,
    .jsonl/.ndjson -> jsonl, else nonempty).

A chunk whose output cannot be used (missing: the path checked is shown;
refused; invalid; unreadable) is left pending with the reason; the run goes
on.

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
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="confine outputs to DIR (default: the journal's directory and each dispatch's recorded cwd)",
    )
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
    root = Path(args.root) if args.root is not None else None
    if root is not None and not root.is_dir():
        raise CliError(f"--root {args.root}: not a directory")
    validation = resolve_validation(args.validate)
    read = read_journals([str(journal)], checkpoint=not args.no_checkpoint, jobs=args.jobs)
    if not args.apply and (args.validate == "auto" or args.validate in BUILTIN_VALIDATORS):
        hold_until_exit(read.ledger)  # nothing but stdout and stderr written, no code of the user's run
    decisions = decide(read.ledger, root, validation, journal_folder=journal.parent)
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


def decide(ledger: Ledger, root: Path | None, validation: Validation, *, journal_folder: Path) -> list[Decision]:
    """A decision for every unfinished or running chunk, in ledger order.

    ``root`` (``--root``) confines every output; without it a chunk's output
    must lie beneath its dispatch's recorded working directory or beneath
    ``journal_folder``. A relative output path is taken from the recorded
    working directory, else from the root (``--root``, else ``journal_folder``).
    The directories on the way are opened once per run (:class:`OpenedDirectories`).
    """
    out = []
    cwd_roots: dict[str, Path] = {}
    bases = RootBases()
    with OpenedDirectories() as directories:
        for chunk in ledger.chunks(ledger.pending([ChunkState.UNFINISHED, ChunkState.RUNNING])):
            if chunk.state is ChunkState.UNFINISHED:
                if root is not None:
                    roots = [root]
                else:
                    cwd = _dispatch_cwd(chunk, cwd_roots)
                    roots = [journal_folder, *([cwd] if cwd is not None else [])]
                out.append(check_chunk(chunk, roots, validation, directories=directories, bases=bases))
            else:
                d = chunk.dispatch
                where = f"pid {d.pid} on {d.host}" if d is not None else "its process"
                out.append(Decision(chunk, Verdict.RUNNING, f"still running ({where}): left alone", chunk.output_file))
    return out


def _dispatch_cwd(chunk: Chunk, known: dict[str, Path] | None = None) -> Path | None:
    d = chunk.dispatch
    if d is None or not d.cwd or not os.path.isabs(d.cwd):
        return None
    if known is None:
        return Path(d.cwd)
    path = known.get(d.cwd)
    if path is None:
        path = known[d.cwd] = Path(d.cwd)
    return path


def _output_location(chunk: Chunk, root: Path, absolute_root: str | None = None) -> str | None:
    """Where the chunk's output file is (:meth:`~spanjournal.ledger.Chunk.output_path`: a relative name
    is taken from the dispatching process's working directory, else from ``root``), absolute and
    normalised. Lexical: nothing is resolved."""
    base = absolute_root if absolute_root is not None else os.path.abspath(root)
    where = output_location(chunk.output_file, chunk.cwd, base)
    return os.path.abspath(where) if where is not None else None


def _output_path(chunk: Chunk, root: Path) -> Path | None:
    """:func:`_output_location` as a :class:`~pathlib.Path`."""
    where = _output_location(chunk, root)
    return Path(where) if where is not None else None


def check_chunk(
    chunk: Chunk,
    roots: list[Path],
    validation: Validation,
    *,
    directories: OpenedDirectories | None = None,
    bases: RootBases | None = None,
) -> Decision:
    """What to do with one unfinished chunk. Never raises for what a file or a line holds.

    ``directories`` keeps the directories opened on the way for the next chunks of a run.
    """
    output = chunk.output_file
    if output is None:
        return Decision(chunk, Verdict.NO_OUTPUT, "no output file named in the journal")
    if "\0" in output:
        return Decision(chunk, Verdict.REFUSED, "refused: a NUL byte in the path", output)
    try:
        bases = bases if bases is not None else RootBases()
        path = _output_location(chunk, roots[0], bases(roots[0])[0])
        assert path is not None
        root, parts, refusal = confine(roots, path, output, bases=bases)
        if root is None or parts is None:
            return Decision(chunk, Verdict.REFUSED, f"refused: {refusal}", output)
        fd, verdict, problem = open_beneath(root, parts, directories)
        if fd is None:
            return Decision(chunk, verdict, problem, output)
        try:
            return _check_opened(chunk, fd, Path(path), output, validation)
        finally:
            os.close(fd)
    except (OSError, ValueError, OverflowError) as exc:  # a file or a field this run cannot use
        return Decision(chunk, Verdict.INVALID, f"cannot check: {exc}", output)


def _check_opened(chunk: Chunk, fd: int, path: Path, output: str, validation: Validation) -> Decision:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        return Decision(chunk, Verdict.INVALID, "not a regular file", output)
    dispatched = _parse_ts(chunk.dispatch.ts if chunk.dispatch is not None else None)
    if dispatched is not None and st.st_mtime < dispatched - MTIME_SLACK.total_seconds():
        return Decision(chunk, Verdict.INVALID, "older than the dispatch (a previous run's file?)", output)
    name, check = validation.for_file(path)
    ok, why = check(_opened_path(fd, path), fd)
    if not ok:
        return Decision(chunk, Verdict.INVALID, f"invalid ({name}): {why}", output, name)
    try:
        modified: datetime | None = datetime.fromtimestamp(st.st_mtime, timezone.utc).astimezone()
    except (OverflowError, OSError, ValueError):  # a modification time no datetime holds
        modified = None
    return Decision(chunk, Verdict.VALID, f"valid ({name})", output, name, finished_at=modified)


class RootBases:
    """Each root as given made absolute, and resolved (``realpath``): worked out once per root and run."""

    def __init__(self) -> None:
        self._bases: dict[Path, tuple[str, str]] = {}

    def __call__(self, root: Path) -> tuple[str, str]:
        bases = self._bases.get(root)
        if bases is None:
            bases = self._bases[root] = (os.path.abspath(root), os.path.realpath(root))
        return bases


def _parts_beneath(path: str, base: str) -> list[str] | None:
    """The components of ``path`` below ``base`` (both absolute and normalised), or None if not beneath it."""
    if path.startswith("//") or base.startswith("//"):  # POSIX leaves a leading "//" to the system: as pathlib does
        pure = Path(path)
        return list(pure.relative_to(base).parts) if pure.is_relative_to(base) else None
    if base == "/":
        rest = path[1:]
    elif path.startswith(base) and path[len(base) : len(base) + 1] in ("/", ""):
        rest = path[len(base) + 1 :]
    else:
        return None
    return rest.split("/") if rest else []


def confine(
    roots: list[Path], path: Path | str, output_file: str, *, bases: RootBases | None = None
) -> tuple[Path | None, list[str] | None, str]:
    """The first of ``roots`` that ``path`` (``output_file`` made absolute, normalised) lies beneath,
    and its components below it; else ``(None, None, why)``.

    Lexical only: the components are then opened one by one from the root
    with no symlink followed (:func:`open_beneath`).
    """
    where_path = os.fspath(path)
    bases_of = bases if bases is not None else RootBases()
    for root in roots:
        for base in bases_of(root):
            parts = _parts_beneath(where_path, base)
            if parts:
                return root, parts, ""
    where = " or ".join(str(r) for r in roots)
    if os.path.isabs(output_file):
        return None, None, f"absolute path outside the root {where}"
    if ".." in Path(output_file).parts:
        return None, None, f"'..' leads outside the root: {Path(where_path)}"
    return None, None, f"{Path(where_path)} is outside the root {where}"


_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class OpenedDirectories:
    """The directories :func:`open_beneath` opened, by root and components, kept open for a run.

    Each was opened one component at a time, following no symlink, like the
    files beneath it: outputs of one directory cost one walk, then one
    ``openat`` each. A directory found missing stays missing for the run
    (outputs beneath it are missing without a walk). At most ``limit`` are
    kept (then all are closed and the walks start again). Close it (or use it
    as a context manager) when done.
    """

    def __init__(self, limit: int = 256) -> None:
        self.limit = limit
        self._fds: dict[tuple[str, tuple[str, ...]], int] = {}
        self._missing: set[tuple[str, tuple[str, ...]]] = set()
        self._absolute: dict[str, str] = {}

    def get(self, key: tuple[str, tuple[str, ...]]) -> int | None:
        return self._fds.get(key)

    def is_missing(self, key: tuple[str, tuple[str, ...]]) -> bool:
        return key in self._missing

    def missing(self, key: tuple[str, tuple[str, ...]]) -> None:
        """The directory ``key`` names does not exist."""
        self._missing.add(key)

    def shown(self, root: Path, parts: list[str]) -> str:
        """``root/parts...`` made absolute (lexically), as messages show it."""
        key = os.fspath(root)
        absolute = self._absolute.get(key)
        if absolute is None:
            absolute = self._absolute[key] = os.path.abspath(root)
        return os.path.join(absolute, *parts)

    def keep(self, key: tuple[str, tuple[str, ...]], fd: int) -> None:
        """Own ``fd`` from now on."""
        if len(self._fds) >= self.limit:
            self.close()
        self._fds[key] = fd

    def close(self) -> None:
        self._missing.clear()
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            os.close(fd)

    def __enter__(self) -> OpenedDirectories:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_beneath(
    root: Path, parts: list[str], directories: OpenedDirectories | None = None
) -> tuple[int | None, Verdict, str]:
    """Open ``root/parts...`` walking one component at a time, following no symlink at any level.

    Returns ``(fd, VALID, "")``, or ``(None, verdict, why)`` with the path
    checked in ``why``. What was opened is what gets checked: renaming or
    swapping a directory for a symlink meanwhile can make the output missing
    or refused, never lead elsewhere. ``directories`` keeps the directories
    opened on the way (and gives those opened before) for the rest of a run.
    """
    if directories is None:
        with OpenedDirectories() as once:
            return open_beneath(root, parts, once)
    root_key = os.fspath(root)
    # the deepest directory on the way that is open already
    start = len(parts)
    current = None
    while current is None and start > 0:
        start -= 1
        key = (root_key, tuple(parts[:start]))
        if directories.is_missing(key):
            return None, Verdict.MISSING, f"output file missing: {directories.shown(root, parts)}"
        current = directories.get(key)
    if current is None:
        try:
            current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            return None, Verdict.INVALID, f"cannot open the root {root}: {exc.strerror}"
        directories.keep((root_key, ()), current)
    last_depth = len(parts) - 1
    for depth in range(start, len(parts)):
        part = parts[depth]
        last = depth == last_depth
        try:
            opened = os.open(part, _FILE_FLAGS if last else _DIRECTORY_FLAGS, dir_fd=current)
        except FileNotFoundError:
            if not last:
                directories.missing((root_key, tuple(parts[: depth + 1])))
            return None, Verdict.MISSING, f"output file missing: {directories.shown(root, parts)}"
        except OSError as exc:
            here = Path(os.path.abspath(root), *parts[: depth + 1])
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK) and _is_symlink(current, part):
                return None, Verdict.REFUSED, f"refused: a symlink on the way: {here} (none is followed)"
            if exc.errno == errno.ENOTDIR:
                shown = Path(os.path.abspath(root), *parts)
                return None, Verdict.MISSING, f"output file missing: {shown} ({here} is not a directory)"
            return None, Verdict.INVALID, f"cannot open {here}: {exc.strerror}"
        if last:
            return opened, Verdict.VALID, ""
        directories.keep((root_key, tuple(parts[: depth + 1])), opened)
        current = opened
    raise AssertionError("open_beneath: no component")  # parts is never empty (confine)


def _is_symlink(directory_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=directory_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _opened_path(fd: int, path: Path) -> Path:
    """A path that opens the very file behind ``fd`` (Linux: ``/proc/self/fd/N``), for MODULE:FUNC validators."""
    proc = Path(f"/proc/self/fd/{fd}")
    return proc if proc.exists() else path


def _parse_ts(ts: str | None) -> float | None:
    """A dispatch ``ts`` as a POSIX time, or ``None`` when absent or unreadable."""
    if not ts:
        return None
    try:
        parsed = datetime.fromisoformat(ts.replace("Z", "+00:00"))
        return (parsed if parsed.tzinfo is not None else parsed.astimezone()).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


# -- validating -----------------------------------------------------------

#: The largest single JSON document ``--validate json`` reads (it is read whole; JSON Lines are streamed).
MAX_JSON_BYTES = 256 << 20
_BLOCK = 1 << 20


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


def _too_big(size: int) -> tuple[bool, str]:
    return False, (
        f"{_mib(size)}: over the {_mib(MAX_JSON_BYTES)} limit for one JSON document, not validated"
        " (--validate nonempty or MODULE:FUNC to accept it)"
    )


def validate_json(path: Path, fd: int) -> tuple[bool, str]:
    """One whole JSON document: a write cut short does not parse. At most MAX_JSON_BYTES, read once."""
    size = os.fstat(fd).st_size
    if size > MAX_JSON_BYTES:
        return _too_big(size)
    buf = bytearray(size + 1)  # one more: a file still growing shows up
    view = memoryview(buf)
    filled = 0
    while filled < len(buf) and (n := os.readv(fd, [view[filled:]])):
        filled += n
    if filled > size:
        return False, "the file grew while it was read (still being written?)"
    data = view[:filled]
    if not filled or (filled <= _BLOCK and bytes(data).isspace()):
        return False, "empty file"
    try:
        msgspec.json.decode(data, type=msgspec.Raw)  # checks the syntax, builds nothing
    except msgspec.DecodeError as exc:
        return False, str(exc)
    return True, ""


def validate_jsonl(path: Path, fd: int) -> tuple[bool, str]:
    """JSON Lines: at least one line, every line JSON, the last one ended by a newline. Streamed."""
    size = os.fstat(fd).st_size
    if size and os.pread(fd, 1, size - 1) != b"\n":
        return False, "last line not terminated (a write cut short?)"
    number = 0
    seen_json = False
    tail = bytearray()  # the line still being read
    offset = 0
    while block := os.pread(fd, _BLOCK, offset):
        offset += len(block)
        cut = block.rfind(b"\n")
        if cut < 0:
            tail += block
            if len(tail) > MAX_JSON_BYTES:
                return False, f"line {number + 1}: over the {_mib(MAX_JSON_BYTES)} limit for one line"
            continue
        text: bytes | bytearray = block[:cut]
        if tail:
            tail += text
            text, tail = tail, bytearray()
        tail += block[cut + 1 :]
        for line in text.split(b"\n"):
            number += 1
            if not line.strip():
                continue
            try:
                msgspec.json.decode(line, type=msgspec.Raw)
            except msgspec.DecodeError as exc:
                return False, f"line {number}: {exc}"
            seen_json = True
    if tail:
        return False, "last line not terminated (a write cut short?)"
    return (True, "") if seen_json else (False, "empty file")


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
        notes.append(f"{refused} refused: outside the root or through a symlink")
    running = len(decisions) - len(unfinished)
    if running:
        notes.append(f"{running} still running")
    return head + (f" ({', '.join(notes)})" if notes else "")
