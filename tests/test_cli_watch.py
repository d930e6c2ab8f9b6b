"""``spanjournal watch``: frames, following a journal, and the live view of a real fan-out.

The fan-out is a real child process dispatching through the decorator
(``crash_helpers.simulate_fanout``). ``watch --once`` is compared with
``pending`` while the child is stopped (SIGSTOP), so both see the same
journal; the live view runs in tmux on a server of its own (``tmux -L``), read
with ``capture-pane``, and every wait is bounded. Without tmux that test
skips, unless ``SPANJOURNAL_REQUIRE_TOOLS=1`` (CI) makes it a failure; with
``SPANJOURNAL_UPDATE_DOCS=1`` its frame is saved as ``docs/watch.txt``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cli_journals import completed, dispatched, failed, run, write_journal
from crash_helpers import TESTS_DIR, chunk_ids
from spanjournal._schema import encode
from spanjournal.cli.watch import Watcher, make_frame, render_text
from spanjournal.ledger import read_ledger

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
T = "2026-05-27T13:22:{:02d}.000000+08:00"
#: Any one wait for the view or the fan-out.
WAIT = 60.0
COUNTS = re.compile(
    r"done ([\d,]+)\s+failed ([\d,]+)\s+running ([\d,]+)\s+unfinished ([\d,]+)\s+never dispatched ([\d,]+)"
)
STATES = ("done", "failed", "running", "unfinished", "never_dispatched")


def counts_in(text: str) -> dict[str, int] | None:
    m = COUNTS.search(text)
    return None if m is None else {s: int(v.replace(",", "")) for s, v in zip(STATES, m.groups())}


def wait_until(
    condition: Callable[[], Any], what: str, timeout: float = WAIT, show: Callable[[], str] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"; the screen:\n{show()}" if show else ""))
        time.sleep(0.05)


# -- frames ---------------------------------------------------------------------------------


@pytest.fixture
def journal(tmp_path: Path) -> Path:
    return write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("c1", ts=T.format(0), batch="b1"),
            dispatched("c2", ts=T.format(0), batch="b1"),
            dispatched("c3", ts=T.format(0), batch="b2"),
            dispatched("c4", ts=T.format(0), batch="b2", host="elsewhere", pid=1),
            completed("c1", ts=T.format(10), tokens_used=600, duration_ms=10_000),
            failed("c2", ts=T.format(20), error="429 quota\nexceeded", error_type="QuotaError"),
            completed("c3", ts=T.format(50), tokens_used=400, duration_ms=50_000),
            failed("c4", ts=T.format(55), error="boom", error_type="Crash"),
        ],
    )


def test_a_frame_counts_states_rates_failures_tokens_and_cost(journal: Path) -> None:
    now = datetime.fromisoformat(T.format(30)).replace(minute=23)  # 13:23:30: c3 (13:22:50) in the last minute, c1 not
    frame = make_frame(read_ledger(journal), [str(journal)], price=0.5, now=now)
    assert frame.stats is not None
    t = frame.stats.totals
    assert (t.done, t.failed, t.chunks) == (2, 2, 4)
    assert frame.rate_recent == 1.0  # c3 done within the last 60 s
    assert frame.rate_overall == pytest.approx(2 * 60 / 50)  # two done between 13:22:00 and 13:22:50
    assert frame.eta_seconds == pytest.approx(2 * 60)  # two not done at 1 a minute
    assert [f.chunk_id for f in frame.failures] == ["c4", "c2"]  # latest first
    assert frame.failures[1].error == "429 quota exceeded"  # on one line
    assert frame.now == "13:23:30" and frame.latest == "13:22:55"  # the journal's +08:00
    text = render_text(frame)
    assert "done 2  failed 2  running 0  unfinished 0  never dispatched 0" in text
    assert "ETA 2 min" in text
    assert "tokens 1,000, cost 0.5000 (at 0.5 per 1k tokens)" in text
    assert re.search(r"^b1\s+2\s+1\s+1\s+0\s+0\s+0\s+600\s+0\.3000$", text, re.M)
    assert "\x1b" not in text


def test_the_watcher_waits_for_a_journal_follows_it_and_a_replaced_one(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    clock = [0.0]
    watcher = Watcher([str(path)], clock=lambda: clock[0])
    assert "no such journal" in (watcher.frame().waiting or "")
    write_journal(
        path, [dispatched("c1", ts=T.format(0)), dispatched("c2", ts=T.format(1)), failed("c2", ts=T.format(5))]
    )
    frame = watcher.frame()
    assert frame.waiting is None and frame.stats is not None
    assert (frame.stats.totals.failed, frame.stats.totals.unfinished) == (1, 1)
    assert [f.chunk_id for f in frame.failures] == ["c2"] and frame.failures[0].ts == "13:22:05"
    assert frame.rate_recent is None  # one look: no throughput yet
    clock[0] = 30.0
    with open(path, "ab") as f:
        for event in (
            completed("c1", ts=T.format(20)),
            dispatched("c3", ts=T.format(21)),
            failed("c3", ts=T.format(25)),
        ):
            f.write(encode(event))
    frame = watcher.frame()
    assert frame.stats is not None and frame.stats.totals.done == 1
    assert frame.rate_recent == 2.0  # one more done in 30 s of watching
    assert frame.eta_seconds == 60.0  # two not done, at 2 a minute
    assert [f.chunk_id for f in frame.failures] == ["c3", "c2"]  # the newest first
    replacement = write_journal(tmp_path / "new.jsonl", [dispatched("x1"), completed("x1")])
    os.replace(replacement, path)
    frame = watcher.frame()
    assert frame.stats is not None and (frame.stats.totals.chunks, frame.stats.totals.done) == (1, 1)


def test_once_in_a_pipe_is_plain_text(journal: Path) -> None:
    result = run("spanjournal", "watch", journal, "--once", "--group-by", "agent")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "┃" not in result.stdout
    assert counts_in(result.stdout) == {"done": 2, "failed": 2, "running": 0, "unfinished": 0, "never_dispatched": 0}
    assert "by agent" in result.stdout


def test_bad_input_is_one_line_and_exit_2(journal: Path, tmp_path: Path) -> None:
    for args, says in [
        ([tmp_path / "missing.jsonl", "--once"], "no such journal"),
        ([journal, "--interval", "0"], "positive"),
        ([journal, "--group-by", "("], "--group-by"),
        ([journal, "--price-per-1k-tokens", "x"], "not a number"),
    ]:
        result = run("spanjournal", "watch", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr
    help_text = run("spanjournal", "watch", "--help").stdout
    assert "--once" in help_text and "spanjournal watch runs/bench.jsonl" in help_text


# -- a real fan-out -------------------------------------------------------------------------

FANOUT = """\
import json, sys
from crash_helpers import simulate_fanout
spec = json.loads(sys.argv[1])
spec["work"] = tuple(spec["work"])  # a (low, high) range of seconds
simulate_fanout(**spec)
"""


@contextlib.contextmanager
def fanout(journal: Path, ids: list[str], **options: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A child process dispatching ``ids`` through the decorator; killed (by its pid) on the way out."""
    spec = {"journal": str(journal), "chunk_ids": ids, "durability": "flush", **options}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_"))}
    child_path = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))  # finds crash_helpers
    child = subprocess.Popen(
        [sys.executable, "-c", FANOUT, json.dumps(spec)],
        env={**env, "SPANJOURNAL_TZ": "Asia/Kuala_Lumpur", "PYTHONPATH": child_path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGCONT)
                os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)


def dispatched_lines(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b'"event":"subagent_dispatched"')
    except FileNotFoundError:
        return 0


def pending_counts(journal: Path) -> dict[str, int]:
    """Chunks per state as ``pending`` reports them (every state but done), and done as the rest."""
    result = run("pending", journal, "--json", *(f"--state={s}" for s in STATES if s != "done"))
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    counts = dict.fromkeys(STATES, 0)
    for chunk in listed:
        counts[chunk["state"]] += 1
    total = int(re.search(r"\((\d+) chunks", result.stderr).group(1))  # type: ignore[union-attr]
    counts["done"] = total - len(listed)
    return counts


@pytest.mark.integration
def test_watch_once_matches_pending_while_a_fanout_runs(tmp_path: Path) -> None:
    journal = tmp_path / "run.jsonl"
    ids = chunk_ids(60, batches=3)
    seen_running = seen_done = 0
    with fanout(journal, ids, threads=6, work=[0.05, 0.4], fail=ids[5::9], hang=ids[-2:]) as child:
        for wanted in (8, 25, 45):
            wait_until(lambda n=wanted: dispatched_lines(journal) >= n, f"{wanted} dispatches")
            os.kill(child.pid, signal.SIGSTOP)  # the journal holds still; the writer is alive (running)
            try:
                watched = run("spanjournal", "watch", journal, "--once")
                assert watched.returncode == 0, watched.stderr
                shown = counts_in(watched.stdout)
                assert shown == pending_counts(journal), watched.stdout
                assert shown is not None
                assert sum(shown.values()) == len(ids)  # the plan: never dispatched included
                seen_running += shown["running"]
                seen_done += shown["done"]
            finally:
                os.kill(child.pid, signal.SIGCONT)
    assert seen_running and seen_done  # it was watched while it ran, and while it got work done


# -- the live view in tmux ------------------------------------------------------------------


class Tmux:
    """A tmux server of its own (``-L``), one session with a uniquely generated name."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which("tmux")
        if binary is None:
            if os.environ.get("SPANJOURNAL_REQUIRE_TOOLS") == "1":
                pytest.fail("tmux is not installed (apt-get install tmux)")
            pytest.skip("tmux is not installed")
        self.binary = binary
        tag = f"{os.getpid()}-{uuid.uuid4().hex[:10]}"
        self.socket = f"spanjournal-test-{tag}"
        self.session = f"watch-{tag}"
        self.tmp_path = tmp_path

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=False
        )

    def start(self, command: str) -> None:
        script = self.tmp_path / "watch.sh"
        # the terminal's own size, not one the test runner's environment may set
        script.write_text(f'unset COLUMNS LINES\n{command}\necho "exit=$?"\nsleep 600\n')
        result = self.tmux(
            "new-session", "-d", "-s", self.session, "-x", "120", "-y", "45", "-e", "TERM=xterm-256color",
            f"bash {script}",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session).stdout

    def close(self) -> None:
        self.tmux("kill-session", "-t", self.session)
        self.tmux("kill-server")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.close()


@pytest.mark.integration
def test_the_live_view_follows_a_fanout_from_before_its_journal_exists(tmp_path: Path, tmux: Tmux) -> None:
    journal = tmp_path / "live.jsonl"
    watch = Path(sys.executable).parent / "spanjournal"
    tmux.start(f"cd {tmp_path} && {watch} watch {journal.name} --interval 0.2 --group-by '^(batch-\\d+)'")
    wait_until(
        lambda: "waiting" in tmux.screen() and "no such journal" in tmux.screen(), "the waiting view", show=tmux.screen
    )

    ids = chunk_ids(40, batches=4)
    hang = ids[-3:]
    with fanout(journal, ids, threads=4, work=[0.1, 0.5], fail=ids[3::8], hang=hang) as child:
        first = wait_until(lambda: counts_in(tmux.screen()), "the first frame of the fan-out", show=tmux.screen)
        later = wait_until(
            lambda: (
                (c := counts_in(tmux.screen())) is not None and c["done"] >= first["done"] + 10 and c["running"] and c
            ),
            "a redraw with more chunks done",
            show=tmux.screen,
        )
        assert later["running"] <= 4
        frame = tmux.screen()
        assert "━" in frame and "batch-1" in frame  # the terminal view (rich), not plain text
        if os.environ.get("SPANJOURNAL_UPDATE_DOCS") == "1":
            DOCS.mkdir(exist_ok=True)
            (DOCS / "watch.txt").write_text("\n".join(line.rstrip() for line in frame.rstrip().splitlines()) + "\n")
        wait_until(lambda: (c := counts_in(tmux.screen())) and c["done"] + c["failed"] == len(ids) - len(hang), "done")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    # the writer died with three agents in flight: no line was written, yet they turn unfinished
    wait_until(lambda: (c := counts_in(tmux.screen())) and c["unfinished"] == len(hang) and not c["running"], "cut off")

    replacement = write_journal(tmp_path / "next.jsonl", [dispatched("x1"), completed("x1"), dispatched("x2")])
    os.replace(replacement, journal)
    wait_until(lambda: "1 of 2 chunks done" in tmux.screen(), "the replaced journal", show=tmux.screen)

    tmux.tmux("send-keys", "-t", tmux.session, "C-c")
    wait_until(lambda: "exit=0" in tmux.screen(), "watch to stop on Ctrl-C", show=tmux.screen)
    assert "Traceback" not in tmux.screen() and "KeyboardInterrupt" not in tmux.screen()
