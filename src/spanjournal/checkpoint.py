"""Checkpoints: a journal's folded state, saved, so that the next read folds only the new tail.

A checkpoint holds the :class:`~spanjournal.fold.LedgerState` of one journal
file up to a byte offset (the end of its last complete line), that file's read
statistics and warnings, and what shows that the journal is still the file it
was read from up to that offset:

- its device and inode (a journal replaced by another file is another inode);
- its size must be at least the offset (a truncated journal is not);
- a hash of the bytes before the offset: the first and the last 64 KiB before
  it, and 16 pages of 4 KiB spread evenly in between;
- the checkpoint format, the package version and the journal's real path.

Anything that does not match, or a checkpoint that cannot be decoded, is
ignored and rebuilt: a checkpoint only ever saves work, it never changes an
answer. It is written next to the journal as ``.NAME.spanjournal-checkpoint``
(never ``*.jsonl``, so a directory of journals never reads one), atomically
(a temporary file renamed over the old one), mode 0600; where the journal's
folder is not writable, in the user's cache directory
(``$XDG_CACHE_HOME/spanjournal``, default ``~/.cache/spanjournal``).
``SPANJOURNAL_NO_CHECKPOINT=1`` in the environment turns checkpoints off.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import msgspec

from spanjournal import __version__
from spanjournal._schema import Completed
from spanjournal.fold import ChunkRecord, LedgerState
from spanjournal.reader import ReadIssue, ReadStats

#: Bumped whenever what a checkpoint holds changes meaning.
FORMAT = 1
SUFFIX = ".spanjournal-checkpoint"
#: Set to ``1`` (or any value but ``0`` and empty) to read without checkpoints.
ENV_SWITCH = "SPANJOURNAL_NO_CHECKPOINT"
EDGE_BYTES = 64 * 1024
SAMPLES = 16
SAMPLE_BYTES = 4096


def enabled() -> bool:
    """Whether checkpoints are on (``SPANJOURNAL_NO_CHECKPOINT`` unset, empty or 0)."""
    return os.environ.get(ENV_SWITCH, "") in ("", "0")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spanjournal"


def locations(journal: Path) -> list[Path]:
    """Where a journal's checkpoint may be: beside it, then in the cache directory."""
    real = os.path.realpath(journal)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return [journal.parent / f".{journal.name}{SUFFIX}", cache_dir() / f"{key}{SUFFIX}"]


class _Saved(msgspec.Struct, array_like=True):
    format: int
    version: str
    journal: str
    dev: int
    ino: int
    offset: int
    digest: bytes
    lines: int
    index: list[tuple[int, int]]
    # read statistics of the lines before ``offset``
    events: int
    read_bytes: int
    bad_lines: int
    unknown_events: int
    issues: list[tuple[int, str]]
    # the fold
    chunks: dict[str, ChunkRecord]
    orphans: dict[str, ChunkRecord]
    planned: list[str]
    sessions: list[str]
    failed: dict[str, Completed]
    durations: bytes
    error_types: dict[str, int]
    spanless_orphans: list[str]
    synthetic: int
    token: str


class _Header(msgspec.Struct, array_like=True):
    format: int
    version: str


@dataclass
class Restored:
    """A checkpoint found valid for a journal: where to go on reading from."""

    state: LedgerState
    stats: ReadStats
    offset: int
    lines: int
    index: list[tuple[int, int]]


def digest(fd: int, offset: int) -> bytes:
    """The hash of a journal's bytes before ``offset`` (its edges and evenly spread samples)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(offset.to_bytes(8, "little"))
    h.update(os.pread(fd, min(EDGE_BYTES, offset), 0))
    if offset > 2 * EDGE_BYTES:
        step = (offset - 2 * EDGE_BYTES) // (SAMPLES + 1)
        for i in range(1, SAMPLES + 1):
            h.update(os.pread(fd, SAMPLE_BYTES, EDGE_BYTES + i * step))
    start = max(0, offset - EDGE_BYTES)
    h.update(os.pread(fd, offset - start, start))
    return h.digest()


def digest_of_path(journal: Path, offset: int, identity: tuple[int, int] | None) -> bytes | None:
    """:func:`digest` of ``journal`` if it is still the file ``identity`` names, else None."""
    if identity is None:
        return None
    try:
        fd = os.open(journal, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != identity or st.st_size < offset:
            return None
        return digest(fd, offset)
    except OSError:
        return None
    finally:
        os.close(fd)


def load(journal: Path, fd: int, *, max_issues: int) -> Restored | None:
    """The checkpoint of ``journal`` (open as ``fd``) if one is valid for it, else None."""
    st = os.fstat(fd)
    real = os.path.realpath(journal)
    for where in locations(journal):
        try:
            data = where.read_bytes()
        except OSError:
            continue
        try:
            header = msgspec.msgpack.decode(data, type=_Header, strict=False)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if header.format != FORMAT or header.version != __version__:
            continue
        try:
            saved = msgspec.msgpack.decode(data, type=_Saved)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue
        if (saved.journal, saved.dev, saved.ino) != (real, st.st_dev, st.st_ino) or st.st_size < saved.offset:
            continue
        try:
            if digest(fd, saved.offset) != saved.digest:
                continue
        except OSError:
            continue
        return _restore(saved, str(journal), max_issues)
    return None


def _restore(saved: _Saved, name: str, max_issues: int) -> Restored:
    state = LedgerState()
    state.chunks = saved.chunks
    state.orphans = saved.orphans
    state.planned = dict.fromkeys(saved.planned)
    state.sessions = dict.fromkeys(saved.sessions)
    state.failed = saved.failed
    state.durations = array.array("d")
    state.durations.frombytes(saved.durations)
    state.error_types = saved.error_types
    state.spanless_orphans = set(saved.spanless_orphans)
    state.restore_synthetic(saved.synthetic, saved.token)
    stats = ReadStats(
        files=[name],
        events=saved.events,
        lines=saved.lines,
        bytes=saved.read_bytes,
        bad_lines=saved.bad_lines,
        unknown_events=saved.unknown_events,
        issues=[ReadIssue(name, line, message) for line, message in saved.issues],
        max_issues=max_issues,
    )
    return Restored(state, stats, saved.offset, saved.lines, saved.index)


def save(
    journal: Path,
    identity: tuple[int, int] | None,
    state: LedgerState,
    stats: ReadStats,
    offset: int,
    lines: int,
    index: list[tuple[int, int]],
) -> Path | None:
    """Save the checkpoint of ``journal`` read up to ``offset``; where it went, or None if nowhere.

    Never raises for a place it cannot write to: the read goes on without.
    """
    hashed = digest_of_path(journal, offset, identity)
    if hashed is None or identity is None:
        return None  # replaced or truncated since it was read
    synthetic, token = state.synthetic_counter()
    saved = _Saved(
        format=FORMAT,
        version=__version__,
        journal=os.path.realpath(journal),
        dev=identity[0],
        ino=identity[1],
        offset=offset,
        digest=hashed,
        lines=lines,
        index=index,
        events=stats.events,
        read_bytes=stats.bytes,
        bad_lines=stats.bad_lines,
        unknown_events=stats.unknown_events,
        issues=[(i.line, i.message) for i in stats.issues],
        chunks=state.chunks,
        orphans=state.orphans,
        planned=list(state.planned),
        sessions=list(state.sessions),
        failed=state.failed,
        durations=state.durations.tobytes(),
        error_types=state.error_types,
        spanless_orphans=sorted(state.spanless_orphans),
        synthetic=synthetic,
        token=token,
    )
    try:
        data = msgspec.msgpack.encode(saved)
    except (TypeError, OverflowError, ValueError):  # a value msgpack cannot hold (an int beyond 64 bits)
        return None
    for where in locations(journal):
        if _write_atomically(where, data):
            return where
    return None


def _write_atomically(path: Path, data: bytes) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        return False
    return True


def remove(journal: Path) -> None:
    """Delete the checkpoints of ``journal`` (wherever they are)."""
    for where in locations(journal):
        with contextlib.suppress(OSError):
            where.unlink()


__all__: list[str] = ["ENV_SWITCH", "Restored", "cache_dir", "enabled", "load", "locations", "remove", "save"]
