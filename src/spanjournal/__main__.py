"""``python -m spanjournal``: the ``spanjournal`` command."""

from spanjournal.cli import console_main

console_main()
