"""The plumbing every subcommand shares: its parser, its errors, its read.

A subcommand module (see :mod:`spanjournal.cli`) calls :func:`add_command`
in its ``register`` and raises :class:`CliError` for anything the user must
fix; :func:`run_command` turns that into one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from spanjournal import checkpoint as checkpoints
from spanjournal.cli._output import Progress, report_read_problems
from spanjournal.ledger import Ledger, read_ledger
from spanjournal.reader import JournalReadError, resolve_paths

EXIT_OK = 0
#: ``pending --exit-code`` when something is pending.
EXIT_PENDING = 1
#: Usage errors and journals that cannot be read.
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141

if TYPE_CHECKING:
    from typing import TypeAlias

    #: What ``register(subparsers)`` receives: ``ArgumentParser.add_subparsers()``.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

#: A subcommand's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """Something the user must fix: printed as one line, exit 2, no traceback."""


def add_command(
    subparsers: Subparsers,
    name: str,
    *,
    help: str,
    description: str,
    epilog: str,
    handler: Handler,
) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` shows ``description`` and the examples in ``epilog`` as written."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=handler, prog=parser.prog)
    return parser


def run_command(args: argparse.Namespace) -> int:
    """Call ``args.handler(args)`` and map the ways a command ends to exit codes."""
    prog = getattr(args, "prog", "spanjournal")
    try:
        code = int(args.handler(args))
        sys.stdout.flush()
        return code
    except (CliError, JournalReadError) as exc:
        sys.stderr.write(f"{prog}: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of stdout went away (``pending ... | head``): quietly stop,
        # and keep the interpreter's final flush from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


@dataclass
class JournalRead:
    """A ledger and the journal files it was read from."""

    ledger: Ledger
    files: list[Path]
    #: Bad, torn and repaired lines, all of them (at most a few were printed).
    problems: int


def add_read_options(parser: argparse.ArgumentParser) -> None:
    """The options every command that reads journals has."""
    parser.add_argument(
        "--no-checkpoint",
        action="store_true",
        help="read the journals whole, without using or saving checkpoints "
        f"(also: {checkpoints.ENV_SWITCH}=1); see README, Speed",
    )
    parser.add_argument(
        "--jobs",
        type=_jobs_count,
        default=1,
        metavar="N",
        help="read each journal that has no usable checkpoint in N processes (default 1); "
        "answers and warnings are the same; see README, Speed",
    )


#: The most processes ``--jobs`` takes.
MAX_JOBS = 64


def _jobs_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_JOBS:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_JOBS}: {text!r}")
    return value


def read_journals(
    journals: Sequence[str],
    *,
    stderr: TextIO | None = None,
    expect: str | None = None,
    checkpoint: bool = True,
    jobs: int = 1,
    **ledger_options: Any,
) -> JournalRead:
    """Read journals into a ledger the way every command does.

    Bad paths become a :class:`CliError`; a progress bar shows on a terminal
    for slow reads; files of a directory that are not journals are named,
    one line each, and skipped lines printed as warnings, on ``stderr``.
    Each journal's fold is saved as a checkpoint (unless ``checkpoint`` is
    false), so the next command reads only what was appended. ``jobs``
    processes read each journal without a usable checkpoint.
    ``ledger_options`` go to :func:`~spanjournal.ledger.read_ledger`.
    """
    err = stderr if stderr is not None else sys.stderr
    try:
        files = resolve_paths(journals)
    except JournalReadError as exc:
        raise CliError(str(exc)) from None
    if expect is not None:
        _check_expect_file(expect)
    progress = Progress(sum(_size(p) for p in files), err)
    try:
        options = {"keep_attempts": False, **ledger_options}
        ledger = read_ledger(*journals, expect=expect, checkpoint=checkpoint, progress=progress, jobs=jobs, **options)
    except JournalReadError as exc:
        raise CliError(str(exc)) from None
    finally:
        progress.close()
    for line in ledger.skipped:
        err.write(f"{line}\n")
    read_files = [Path(p) for p in ledger.stats.files]
    problems = report_read_problems(ledger.stats, read_files, err)
    return JournalRead(ledger, read_files, problems)


def _check_expect_file(expect: str) -> None:
    path = Path(expect)
    if not path.exists():
        raise CliError(f"--expect {expect}: no such file")
    if not path.is_file():
        raise CliError(f"--expect {expect}: not a regular file")
    try:
        path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"--expect {expect}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if exc.strerror[:1].isupper() else exc.strerror
    return str(exc)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
