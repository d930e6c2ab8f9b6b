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

import contextlib
import hashlib
import os
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import msgspec

from spanjournal import __version__
from spanjournal._schema import Completed
from spanjournal.fold import (
    ChunkRecord,
    DoneSummary,
    FoldFields,
    LazyDone,
    LazyOpen,
    LedgerState,
    OpenDetails,
    chunk_hashes,
    summarize_done,
)
from spanjournal.reader import JournalReadError, ReadIssue, ReadStats

#: Bumped whenever what a checkpoint holds changes meaning.
FORMAT = 7
SUFFIX = ".spanjournal-checkpoint"
#: A checkpoint file: this, the header's length, the header, then (each read only when a question needs
#: it) the dispatches and failures of the chunks not done, the done chunks and their summary; all msgpack.
MAGIC = b"SJCHKPT\x00"
_LENGTH = struct.Struct("<Q")
#: Set to ``1`` (or any value but ``0`` and empty) to read without checkpoints.
ENV_SWITCH = "SPANJOURNAL_NO_CHECKPOINT"
EDGE_BYTES = 64 * 1024
SAMPLES = 16
SAMPLE_BYTES = 4096
#: New bytes read past a checkpoint before a new one is saved (see :func:`worth_saving`).
SAVE_AFTER_BYTES = 1 << 20


def worth_saving(restored: bool, start: int, offset: int) -> bool:
    """Whether to save a new checkpoint after reading a journal from ``start`` to ``offset``.

    Always when there was no valid checkpoint; after one, only once the new
    tail is worth more than rewriting the checkpoint costs (at least
    :data:`SAVE_AFTER_BYTES`, and a twentieth of what it covered): a small
    tail is folded again by the next read, which costs less.
    """
    if not restored:
        return True
    return offset - start >= max(SAVE_AFTER_BYTES, start // 20)


def enabled() -> bool:
    """Whether checkpoints are on (``SPANJOURNAL_NO_CHECKPOINT`` unset, empty or 0)."""
    return os.environ.get(ENV_SWITCH, "") in ("", "0")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spanjournal"


def locations(journal: Path, suffix: str = SUFFIX) -> list[Path]:
    """Where a journal's checkpoint may be: beside it, then in the cache directory.

    Another ``suffix`` names another file kept for the journal the same way
    (``.NAME<suffix>``, never ``*.jsonl``), such as what ``export`` sent.
    """
    if suffix.endswith(".jsonl"):
        raise ValueError(f"a file kept beside a journal must not look like one: {suffix!r}")
    real = os.path.realpath(journal)
    key = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return [journal.parent / f".{journal.name}{suffix}", cache_dir() / f"{key}{suffix}"]


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
    # the fold: chunks not done here, without their dispatches; done ones encoded apart (``done``), read only
    # when a question needs them
    open_chunks: dict[str, ChunkRecord]
    #: The process of each chunk not done (in order), and the span ids of their failures: enough to say
    #: which are failed, running or unfinished without decoding their dispatches (``open``) and failures.
    open_processes: list[tuple[str | None, int | None, int | None] | None]
    open_failed_spans: list[str]
    #: The length and CRC-32 of the :class:`~spanjournal.fold.OpenDetails` that follows the header in the file
    #: (a check against damage and hand edits, as gzip's and PNG's are; here about eight times faster than blake2b).
    open_length: int
    open_crc: int
    done_count: int
    #: Sorted :func:`~spanjournal.fold.chunk_hash` of each done chunk id (``array('I')`` bytes).
    done_hashes: bytes
    #: The same for the :class:`_Done` that follows them.
    done_length: int
    done_crc: int
    #: The same for the :class:`~spanjournal.fold.DoneSummary` that follows them.
    summary_length: int
    summary_crc: int
    #: Planned chunks never dispatched nor completed (so a done chunk need not be loaded to say so).
    only_planned: list[str]
    #: The rest of the fold; its ``failed`` is empty (the latest failures of chunks not done are in ``open``,
    #: the others with the done chunks).
    fold: FoldFields


class _Done(msgspec.Struct, array_like=True):
    #: Every dispatched chunk id, in first-dispatch order.
    order: list[str]
    records: dict[str, ChunkRecord]
    #: Failures other than the latest attempt's of a chunk not done (those are in the header).
    failed: dict[str, Completed]


class CheckpointChanged(JournalReadError):
    """A part of a checkpoint read when a question needed it was not what its header said (edited by hand)."""


DoneReader = Callable[[], tuple[list[str], dict[str, ChunkRecord], dict[str, Completed]]]


def _section(fd: int, where: Path, offset: int, length: int, expected: int) -> bytes:
    """A part of a checkpoint file kept open (a newer checkpoint renamed over it does not matter)."""
    blob = os.pread(fd, length, offset)
    if len(blob) != length or zlib.crc32(blob) != expected:
        with contextlib.suppress(OSError):
            where.unlink()
        raise CheckpointChanged(f"{where}: damaged, now removed; run the command again (or use --no-checkpoint)")
    return blob


def _readers(
    f: BinaryIO, where: Path, saved: _Saved
) -> tuple[Callable[[], OpenDetails], DoneReader, Callable[[], DoneSummary]]:
    open_start = f.tell()  # the file stays open as long as these readers live
    start = open_start + saved.open_length

    def read_open() -> OpenDetails:
        blob = _section(f.fileno(), where, open_start, saved.open_length, saved.open_crc)
        return msgspec.msgpack.decode(blob, type=OpenDetails)

    def read_done() -> tuple[list[str], dict[str, ChunkRecord], dict[str, Completed]]:
        blob = _section(f.fileno(), where, start, saved.done_length, saved.done_crc)
        done = msgspec.msgpack.decode(blob, type=_Done)
        return done.order, done.records, done.failed

    def read_summary() -> DoneSummary:
        blob = _section(f.fileno(), where, start + saved.done_length, saved.summary_length, saved.summary_crc)
        return msgspec.msgpack.decode(blob, type=DoneSummary)

    return read_open, read_done, read_summary


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
            f = open(where, "rb")  # noqa: SIM115 - kept open for the done chunks, closed by their reader
        except OSError:
            continue
        try:
            saved = _read_header(f)
            if saved is None:
                raise ValueError
            if (saved.journal, saved.dev, saved.ino) != (real, st.st_dev, st.st_ino) or st.st_size < saved.offset:
                raise ValueError
            if os.fstat(f.fileno()).st_size != f.tell() + saved.open_length + saved.done_length + saved.summary_length:
                raise ValueError
            if len(saved.open_processes) != len(saved.open_chunks) or digest(fd, saved.offset) != saved.digest:
                raise ValueError
        except (OSError, ValueError):
            f.close()
            continue
        readers = _readers(f, where, saved)
        return _restore(saved, str(journal), max_issues, *readers)
    return None


def _read_header(f: BinaryIO) -> _Saved | None:
    """The checkpoint's header (everything but the done chunks), or None if it is not one of this version."""
    head = f.read(len(MAGIC) + _LENGTH.size)
    if len(head) != len(MAGIC) + _LENGTH.size or not head.startswith(MAGIC):
        return None
    (length,) = _LENGTH.unpack_from(head, len(MAGIC))
    data = f.read(length)
    try:
        saved = msgspec.msgpack.decode(data, type=_Saved)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if saved.format != FORMAT or saved.version != __version__:
        return None
    return saved


def _restore(
    saved: _Saved,
    name: str,
    max_issues: int,
    read_open: Callable[[], OpenDetails],
    read_done: DoneReader,
    read_summary: Callable[[], DoneSummary],
) -> Restored:
    state = LedgerState()
    state.restore_fields(saved.fold)
    lazy = LazyDone(
        read_done,
        saved.done_hashes,
        saved.done_count,
        only_planned=saved.only_planned,
        planned_count=len(saved.fold.planned),
        read_summary=read_summary,
    )
    details = LazyOpen(read_open, saved.open_chunks, saved.open_processes, saved.open_failed_spans)
    state.restore_chunks(saved.open_chunks, lazy, details)
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
    chunks = state.chunks
    open_chunks = {c: r for c, r in chunks.items() if not r.done}
    dispatches = [r.dispatch for r in open_chunks.values()]
    done = {c: r for c, r in chunks.items() if r.done}
    hashes = chunk_hashes(done)
    try:
        # Failures of chunks not done stay at hand: a later dispatch may take up a failed span id
        # (a completion read before its dispatch). A done chunk stays done whatever comes.
        failed_open = {span: c for span, c in state.failed.items() if c.chunk_id not in done}
        failed_rest = {span: c for span, c in state.failed.items() if c.chunk_id in done}
        open_blob = msgspec.msgpack.encode(OpenDetails(dispatches, failed_open))
        done_blob = msgspec.msgpack.encode(_Done(list(chunks), done, failed_rest))
        summary_blob = msgspec.msgpack.encode(summarize_done(done.items()))
    except (TypeError, OverflowError, ValueError):
        return None
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
        open_chunks={c: msgspec.structs.replace(r, dispatch=None) for c, r in open_chunks.items()},
        open_processes=[None if d is None else (d.host, d.pid, d.proc_start) for d in dispatches],
        open_failed_spans=list(failed_open),
        open_length=len(open_blob),
        open_crc=zlib.crc32(open_blob),
        done_count=len(done),
        done_hashes=hashes.tobytes(),
        done_length=len(done_blob),
        done_crc=zlib.crc32(done_blob),
        summary_length=len(summary_blob),
        summary_crc=zlib.crc32(summary_blob),
        only_planned=state.only_planned(),
        fold=state.fields(failed={}),
    )
    try:
        header = msgspec.msgpack.encode(saved)
    except (TypeError, OverflowError, ValueError):  # a value msgpack cannot hold (an int beyond 64 bits)
        return None
    parts = (MAGIC, _LENGTH.pack(len(header)), header, open_blob, done_blob, summary_blob)
    for where in locations(journal):
        if write_atomically(where, parts):
            return where
    return None


def write_atomically(path: Path, parts: Iterable[bytes]) -> bool:
    """Write ``parts`` to ``path`` through a temporary file renamed over it (mode 0600); False if it cannot."""
    import tempfile  # only when saving: not on the way of a read that saves nothing

    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            for part in parts:
                f.write(part)
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


__all__: list[str] = [
    "ENV_SWITCH",
    "Restored",
    "cache_dir",
    "digest",
    "enabled",
    "load",
    "locations",
    "remove",
    "save",
    "write_atomically",
]
