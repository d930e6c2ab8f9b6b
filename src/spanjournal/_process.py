"""Who wrote a line, and is that process still alive?

A dispatch records ``host``, ``pid`` and ``proc_start`` (the process's start
time in clock ticks since boot, from ``/proc``), so a reader can tell work
that is still running from work whose process died: a reused pid has another
start time.
"""

from __future__ import annotations

import os
from functools import lru_cache


def _host_name() -> str:
    """This machine's name, as ``socket.gethostname()`` gives it (``uname`` where there is one: no socket import)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


HOST = _host_name()


def _stat(pid: int) -> tuple[bytes, int] | None:
    """(state letter, start time in ticks since boot) of ``pid`` from ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rfind(b")") + 2 :].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def proc_start(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if unknown."""
    stat = _stat(pid)
    return stat[1] if stat else None


@lru_cache(maxsize=1)
def self_identity() -> tuple[str, int, int | None]:
    """(host, pid, proc_start) of this process (re-read after a fork)."""
    pid = os.getpid()
    return HOST, pid, proc_start(pid)


os.register_at_fork(after_in_child=self_identity.cache_clear)


def is_alive(host: str | None, pid: int | None, started: int | None) -> bool:
    """True only if the process is provably alive: same host, pid exists, same start."""
    if host != HOST or not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except (OSError, OverflowError):  # OverflowError: a pid no process can have
        return False
    stat = _stat(pid)
    if stat is None:
        return started is None  # no /proc here: the pid's existence is all we know
    state, start = stat
    if state in (b"Z", b"X"):
        return False
    return started is None or start == started
