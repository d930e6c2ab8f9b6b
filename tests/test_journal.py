"""The journal writer: atomic lines, torn-tail repair, durability, group commit, failures."""

from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import multiprocessing.synchronize
import os
import resource
import signal
import stat
import threading
from pathlib import Path

import pytest

from spanjournal import Completed, Dispatched, Journal, JournalWriteError
from spanjournal import journal as journal_module
from spanjournal.ledger import read_ledger


def lines_of(path: Path) -> list[dict[str, object]]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.split(b"\n")[:-1]]


def test_append_writes_one_line_per_event_with_version_first(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.append(Dispatched(ts="2026-01-01T00:00:00.000000+00:00", session_id="s", chunk_id="c-1", span_id="a" * 16))
        j.append({"event": "subagent_completed", "chunk_id": "c-1", "success": True, "extra": [1, 2]})
    raw = path.read_bytes().split(b"\n")
    assert raw[0].startswith(b'{"v":1,"event":"subagent_dispatched"')
    events = lines_of(path)
    assert [e["event"] for e in events] == ["subagent_dispatched", "subagent_completed"]
    assert events[1]["extra"] == [1, 2]  # unknown fields are carried
    assert "task_description" not in events[0]  # optional fields absent, not null


def test_new_file_is_private_and_directories_are_created(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "deep" / "j.jsonl"
    with Journal(path) as j:
        j.append({"event": "subagent_dispatched", "chunk_id": "c"})
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_new_file_and_its_directory_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = tmp_path / "new" / "j.jsonl"
    Journal(path).close()
    assert str(path) in synced
    assert str(path.parent) in synced
    assert str(tmp_path) in synced  # the directory that gained the new directory


def test_torn_tail_is_repaired_before_the_first_append(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"v":1,"event":"subagent_dispatched","chunk_id":"a"}\n{"v":1,"event":"subagent_comp')
    with Journal(path) as j:
        j.append({"event": "subagent_dispatched", "chunk_id": "b"})
        j.append({"event": "subagent_dispatched", "chunk_id": "c"})
    raw = path.read_bytes().split(b"\n")
    assert raw[1] == b'{"v":1,"event":"subagent_comp'
    assert [json.loads(x)["chunk_id"] for x in raw[2:4]] == ["b", "c"]
    assert raw[4] == b""


def test_a_file_ending_in_newline_is_not_padded(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    path.write_bytes(b'{"event":"subagent_dispatched","chunk_id":"a"}\n')
    with Journal(path) as j:
        j.append({"event": "subagent_dispatched", "chunk_id": "b"})
    assert b"\n\n" not in path.read_bytes()
    assert len(lines_of(path)) == 2


def test_durability_none_buffers_until_flush_and_close(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, durability="none")
    j.append({"event": "subagent_dispatched", "chunk_id": "a"})
    assert path.read_bytes() == b""
    j.flush()
    assert len(lines_of(path)) == 1
    j.append({"event": "subagent_dispatched", "chunk_id": "b"})
    j.close()
    assert [e["chunk_id"] for e in lines_of(path)] == ["a", "b"]


def test_durability_flush_writes_through_without_syncing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    path.touch()
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd))
    with Journal(path, durability="flush") as j:
        j.append({"event": "subagent_dispatched", "chunk_id": "a"})
        assert len(lines_of(path)) == 1
    assert calls == []


def test_unknown_durability_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        Journal(tmp_path / "j.jsonl", durability="sometimes")  # type: ignore[arg-type]


def test_group_commit_shares_fsyncs_between_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    path.touch()
    calls = 0
    real_fsync = os.fsync
    count_lock = threading.Lock()

    def counting_fsync(fd: int) -> None:
        nonlocal calls
        with count_lock:
            calls += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    threads, per_thread = 16, 100
    j = Journal(path, durability="fsync")
    start = threading.Barrier(threads)

    def work(t: int) -> None:
        start.wait()
        for i in range(per_thread):
            j.append(Completed(chunk_id=f"t{t}-{i}", success=True))

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    j.close()
    events = threads * per_thread
    assert calls == j.sync_count
    assert calls <= events / 2, f"{calls} fsyncs for {events} events: no group commit"
    ids = {e["chunk_id"] for e in lines_of(path)}
    assert ids == {f"t{t}-{i}" for t in range(threads) for i in range(per_thread)}


def test_every_append_under_fsync_is_synced_before_it_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    path.touch()
    synced_sizes: list[int] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        synced_sizes.append(os.fstat(fd).st_size)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    with Journal(path) as j:
        for i in range(5):
            j.append({"event": "subagent_dispatched", "chunk_id": f"c{i}"})
            assert synced_sizes and synced_sizes[-1] == path.stat().st_size


def _append_many(path: str, worker: int, count: int) -> None:
    with Journal(path, durability="flush") as j:
        for i in range(count):
            j.append({"event": "subagent_dispatched", "chunk_id": f"w{worker}-{i:05d}", "pad": "x" * (i % 300)})


@pytest.mark.integration
def test_eight_processes_append_to_one_file_without_interleaving(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 2000)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    events = lines_of(path)  # every line parses: none torn, none interleaved
    assert len(events) == 8 * 2000
    for w in range(8):
        mine = [e["chunk_id"] for e in events if str(e["chunk_id"]).startswith(f"w{w}-")]
        assert mine == [f"w{w}-{i:05d}" for i in range(2000)]  # each writer's order kept


def test_fsync_failure_raises_and_the_journal_refuses_more(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path)
    j.append({"event": "subagent_dispatched", "chunk_id": "before"})

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(JournalWriteError, match="sync"):
        j.append({"event": "subagent_dispatched", "chunk_id": "during"})
    monkeypatch.undo()
    with pytest.raises(JournalWriteError, match="failed earlier"):
        j.append({"event": "subagent_dispatched", "chunk_id": "after"})
    assert j.failed is not None
    j.close()
    assert lines_of(path)[0]["chunk_id"] == "before"


def _fill_until_size_limit(path: str, limit: int, result: multiprocessing.queues.Queue) -> None:  # type: ignore[name-defined]
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    written = 0
    try:
        with Journal(path, durability="flush") as j:
            while True:
                j.append({"event": "subagent_dispatched", "chunk_id": f"c{written:06d}", "pad": "p" * 100})
                written += 1
    except JournalWriteError as exc:
        try:
            j.append({"event": "subagent_dispatched", "chunk_id": "refused"})
            refused = False
        except JournalWriteError:
            refused = True
        result.put(("raised", written, exc.errno, refused))
    except BaseException as exc:  # pragma: no cover - reported to the test
        result.put(("other", written, repr(exc), False))


@pytest.mark.integration
def test_file_size_limit_raises_write_error_and_keeps_earlier_events(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()
    proc = ctx.Process(target=_fill_until_size_limit, args=(str(path), 8192, result))
    proc.start()
    outcome = result.get(timeout=60)
    proc.join(timeout=30)
    kind, written, err, refused = outcome
    assert kind == "raised"
    assert err == errno.EFBIG
    assert refused
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    ids = [json.loads(x)["chunk_id"] for x in complete.split(b"\n")[:-1]]
    assert ids == [f"c{i:06d}" for i in range(written)]  # nothing acknowledged was lost


def test_journal_after_fork_writes_from_the_child(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, durability="flush")
    j.append({"event": "subagent_dispatched", "chunk_id": "parent"})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            j.append({"event": "subagent_dispatched", "chunk_id": "child"})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    j.close()
    assert [e["chunk_id"] for e in lines_of(path)] == ["parent", "child"]


def test_closed_journal_refuses_appends(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.jsonl")
    j.close()
    j.close()
    with pytest.raises(JournalWriteError, match="closed"):
        j.append({"event": "subagent_dispatched", "chunk_id": "x"})


def test_unwritable_location_raises_write_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(JournalWriteError, match="cannot open journal"):
        Journal(blocker / "j.jsonl")


def test_buffer_threshold_writes_without_flush(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path, durability="none") as j:
        n = journal_module.BUFFER_BYTES // 50 + 10
        for i in range(n):
            j.append({"event": "subagent_dispatched", "chunk_id": f"c{i}"})
        assert path.stat().st_size > 0


# -- a writer killed mid-append, others going on (shared journal) -----------------------------------


def _append_acknowledged(
    path: str,
    writer: int,
    count: int,
    durability: str,
    opened: multiprocessing.synchronize.Barrier,  # type: ignore[name-defined]
    go: multiprocessing.synchronize.Event,  # type: ignore[name-defined]
) -> None:
    """Append ``count`` lines, half before ``go`` and half after; note each one whose append returned."""
    with Journal(path, durability=durability) as j, open(f"{path}.ack{writer}", "w") as acks:  # type: ignore[arg-type]
        for i in range(count):
            if i == count // 2:
                opened.wait(timeout=60)
                go.wait(timeout=60)
            j.append({"event": "subagent_dispatched", "chunk_id": f"w{writer}-{i}"})
            acks.write(f"w{writer}-{i}\n")
            acks.flush()


def _die_mid_line(path: str) -> None:
    """A writer killed after half its line reached the file, lock held (what SIGKILL mid-append leaves)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b'{"v":1,"event":"subagent_dispatched","chunk_id":"kil')
    os.kill(os.getpid(), signal.SIGKILL)


def _acknowledged(path: Path, writers: int) -> list[str]:
    return [line for w in range(writers) for line in Path(f"{path}.ack{w}").read_text().split()]


def _lost(path: Path, writers: int) -> list[str]:
    ledger = read_ledger(path)
    return [chunk_id for chunk_id in _acknowledged(path, writers) if chunk_id not in ledger]


@pytest.mark.integration
def test_a_writer_killed_mid_line_loses_no_other_writers_line(tmp_path: Path) -> None:
    """Writers opened before the kill must still start on a line boundary: 0 lines lost in every trial."""
    ctx = multiprocessing.get_context("fork")
    writers, per_writer, trials = 6, 16, 8
    lost_per_trial = []
    for trial in range(trials):
        path = tmp_path / f"shared-{trial}.jsonl"
        opened, go = ctx.Barrier(writers + 1), ctx.Event()
        durability = "fsync" if trial % 2 else "flush"
        procs = [
            ctx.Process(target=_append_acknowledged, args=(str(path), w, per_writer, durability, opened, go))
            for w in range(writers)
        ]
        for p in procs:
            p.start()
        opened.wait(timeout=60)  # every writer has its journal open and has appended
        killer = ctx.Process(target=_die_mid_line, args=(str(path),))
        killer.start()
        killer.join(timeout=60)
        assert killer.exitcode == -signal.SIGKILL
        assert not path.read_bytes().endswith(b"\n")  # the fragment is the file's tail
        go.set()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        assert len(_acknowledged(path, writers)) == writers * per_writer
        lost_per_trial.append(len(_lost(path, writers)))
    assert lost_per_trial == [0] * trials


def _append_huge_lines(path: str, started: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    with Journal(path, durability="flush") as j:
        started.set()
        while True:
            j.append({"event": "subagent_dispatched", "chunk_id": "huge", "pad": "x" * (32 << 20)})


@pytest.mark.integration
def test_sigkill_during_a_huge_line_loses_no_other_writers_line(tmp_path: Path) -> None:
    """SIGKILL from outside while a writer is inside a 32 MiB write; the others go on appending."""
    ctx = multiprocessing.get_context("fork")
    writers, per_writer, trials = 4, 12, 4
    torn = 0
    lost_per_trial = []
    for trial in range(trials):
        path = tmp_path / f"shared-{trial}.jsonl"
        opened, go = ctx.Barrier(writers + 1), ctx.Event()
        procs = [
            ctx.Process(target=_append_acknowledged, args=(str(path), w, per_writer, "flush", opened, go))
            for w in range(writers)
        ]
        for p in procs:
            p.start()
        opened.wait(timeout=60)
        started = ctx.Event()
        victim = ctx.Process(target=_append_huge_lines, args=(str(path), started))
        victim.start()
        started.wait(timeout=60)
        size = path.stat().st_size
        while path.stat().st_size == size and victim.is_alive():  # kill it once its line is under way
            os.sched_yield()
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=60)
        torn += not path.read_bytes().endswith(b"\n")
        go.set()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        lost_per_trial.append(len(_lost(path, writers)))
    print(f"{trials} trials, {torn} left a torn line, lost per trial: {lost_per_trial}")
    assert lost_per_trial == [0] * trials


# -- fork ----------------------------------------------------------------------------------------------


def test_a_forked_child_does_not_write_the_parents_buffered_events(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(path, durability="none")
    for i in range(50):
        j.append({"event": "subagent_dispatched", "chunk_id": f"parent-{i}"})
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            j.append({"event": "subagent_dispatched", "chunk_id": "child"})
            j.close()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    j.close()
    ids = [e["chunk_id"] for e in lines_of(path)]
    assert sorted(ids) == sorted([f"parent-{i}" for i in range(50)] + ["child"])


def test_a_forked_child_locks_the_journal_apart_from_its_parent(tmp_path: Path) -> None:
    """flock belongs to an open file description: a child sharing the parent's would not be excluded."""
    path = tmp_path / "j.jsonl"
    j = Journal(path, durability="flush")
    fcntl.flock(j._fd, fcntl.LOCK_EX)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            fcntl.flock(j._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(write_end, b"locked")
        except BlockingIOError:
            os.write(write_end, b"excluded")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    fcntl.flock(j._fd, fcntl.LOCK_UN)
    j.append({"event": "subagent_dispatched", "chunk_id": "parent"})
    j.close()
    assert os.read(read_end, 100) == b"excluded"
    os.close(read_end)
    os.close(write_end)
