"""The ``spanjournal`` command line: ``pending``, ``reconcile``, ``stats``, ``export``.

Subcommands are modules listed in :data:`SUBCOMMANDS`. Adding one is one
line there, and a module that provides:

``register(subparsers) -> None``
    Adds its parser with :func:`spanjournal.cli._command.add_command`, which
    sets the handler, the ``prog`` used in error messages, and a ``--help``
    that keeps the description and the examples of the epilog as written.
``handler(args) -> int`` (passed to ``add_command``)
    Does the work and returns the exit code. Raise
    :class:`~spanjournal.cli._command.CliError` for anything the user must
    fix: it is printed as one line, exit 2, without a traceback.

Only the module of the subcommand being run is imported (``spanjournal
--help`` imports them all), so a module's top-level imports cost every run of
that command only; still keep heavy ones (the OpenTelemetry SDK, ``rich``)
inside the functions that need them.

The CLI never imports the OpenTelemetry SDK for reading commands.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

#: Subcommand name -> the module that implements it, in ``--help`` order.
SUBCOMMANDS: dict[str, str] = {
    "pending": "spanjournal.cli.pending",
    "reconcile": "spanjournal.cli.reconcile",
    "stats": "spanjournal.cli.stats",
    "export": "spanjournal.cli.export",
    "report": "spanjournal.cli.report",
    "watch": "spanjournal.cli.watch",
    "claude-hook": "spanjournal.cli.claude_hook",
    "claude-install": "spanjournal.cli.claude_install",
}

DESCRIPTION = """\
Answer questions about a run from its journal: what must be retried
(pending), which unfinished chunks already wrote valid outputs (reconcile),
how the run went (stats); and send it to a tracing backend (export)."""

EPILOG = """\
examples:
  spanjournal pending runs/bench.jsonl
  spanjournal reconcile runs/bench.jsonl --apply
  spanjournal stats runs/bench.jsonl --price-per-1k-tokens 0.003
  spanjournal export runs/bench.jsonl --only unfinished

Run `spanjournal COMMAND --help` for a command's options and examples.
"""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``spanjournal`` parser, with every subcommand or ``only`` the one named."""
    from spanjournal import __version__

    parser = argparse.ArgumentParser(
        prog="spanjournal",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, module in SUBCOMMANDS.items():
        if only is None or name == only:
            importlib.import_module(module).register(subparsers)
    return parser


#: What the command being run keeps until its process ends (see :func:`hold_until_exit`).
_held: list[object] = []


def hold_until_exit(obj: object) -> None:
    """Keep ``obj`` (a ledger) alive until the process ends, and let it end without freeing it.

    Freeing a ledger of a million chunks object by object takes a tenth of a
    second or more, for nothing when the process is ending anyway: the console
    scripts (:func:`console_main`) then end with ``os._exit`` once stdout and
    stderr are flushed. Only for commands that leave nothing else for the
    interpreter's exit to close or flush (they wrote to stdout and stderr only).
    """
    _held.append(obj)


def end_process(code: int) -> NoReturn:
    """Exit with ``code``: at once if the command held its ledger (:func:`hold_until_exit`), else as usual."""
    if _held:
        import threading

        if threading.active_count() == 1:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except (OSError, ValueError):
                pass  # a closed pipe: the usual exit says it as usual
            else:
                os._exit(code)
    sys.exit(code)


def console_main() -> NoReturn:
    """The ``spanjournal`` console script (:func:`main`, ended by :func:`end_process`)."""
    end_process(main())


def pending_console() -> NoReturn:
    """The ``pending`` console script (:func:`pending_main`, ended by :func:`end_process`)."""
    end_process(pending_main())


def main(argv: Sequence[str] | None = None) -> int:
    """The ``spanjournal`` command: its exit code."""
    _held.clear()
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["claude-hook"]:  # runs inside Claude Code on every sub-agent call: the short way
        from spanjournal.cli.claude_hook import hook_main

        return hook_main(args_in[1:])
    from spanjournal.cli._command import run_command

    only = args_in[0] if args_in and args_in[0] in SUBCOMMANDS else None
    args = build_parser(only).parse_args(args_in)
    return run_command(args)


def pending_main(argv: Sequence[str] | None = None) -> int:
    """The ``pending`` command (``spanjournal pending``): its exit code."""
    _held.clear()
    from spanjournal.cli._command import run_command
    from spanjournal.cli.pending import standalone_parser

    args = standalone_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return run_command(args)


__all__ = ["SUBCOMMANDS", "build_parser", "console_main", "hold_until_exit", "main", "pending_console", "pending_main"]
