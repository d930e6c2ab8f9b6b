"""``python -m spanjournal``: the ``spanjournal`` command."""

import sys

from spanjournal.cli import main

sys.exit(main())
