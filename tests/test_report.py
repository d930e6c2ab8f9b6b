"""``spanjournal report``: the data the page embeds, and the file the command writes.

What the page does with the data in a real browser is in ``test_report_browser.py``.
"""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import msgspec
import pytest

from cli_journals import completed, dispatched, failed, run, running, write_journal
from spanjournal._schema import RunPlanned
from spanjournal.cli.report import CUT_OFF, DONE, FAILED, OUTCOMES, RECONCILED, RUNNING, build, render_page
from spanjournal.ledger import read_ledger

ROOT = Path(__file__).resolve().parents[1]
T = "2026-05-27T13:22:{:02d}.000000+08:00"
DATA_START = '<script id="spanjournal-data" type="application/json">'


def ms(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp() * 1000


@pytest.fixture
def crashed_run(tmp_path: Path) -> Path:
    """Session s1 (a dead process) dies with c3 in flight; s2 retries c2; s3 (this process) is running c5."""
    return write_journal(
        tmp_path / "run.jsonl",
        [
            RunPlanned(ts=T.format(0), session_id="s1", chunk_ids=["c1", "c2", "c3", "c4", "c6", "c7"]),
            dispatched("c1", ts=T.format(1), host="h1", pid=11, batch="b1", agent="router", task_description="one"),
            dispatched("c2", ts=T.format(2), host="h1", pid=11, batch="b1", agent="router"),
            dispatched("c3", ts=T.format(3), host="h1", pid=11, batch="b2", agent="grader"),
            dispatched("c6", ts=T.format(3), host="h1", pid=11, batch="b2", agent="grader", output_file="o/6.json"),
            dispatched("c7", ts=T.format(4), host="h1", pid=11, batch="b2", agent="grader"),
            failed("c2", ts=T.format(5), error="quota gone", error_type="QuotaError"),
            completed("c1", ts=T.format(6), tokens_used=100),
            failed("c7", ts=T.format(9), error="took too long", error_type="Timeout", input_tokens=7, output_tokens=3),
            # s2 retries c2; a reconcile later records c6 done from its output file, written at :08
            dispatched("c2", 2, session="s2", ts=T.format(20), host="h1", pid=12, batch="b1", agent="router"),
            completed("c2", attempt=2, session="s2", ts=T.format(25), tokens_used=50),
            completed("c6", ts=T.format(8), reconciled=True, output_file="o/6.json"),
            running("c5", session="s3", ts=T.format(30), batch="b3"),
        ],
    )


def outcomes_by_chunk(data: msgspec.Struct) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    ids = data.chunks.id  # type: ignore[attr-defined]
    for chunk, outcome in zip(data.attempts.chunk, data.attempts.outcome):  # type: ignore[attr-defined]
        out.setdefault(ids[chunk], []).append(OUTCOMES[outcome])
    return out


def test_each_attempt_is_a_bar_coloured_by_its_outcome(crashed_run: Path) -> None:
    data = build(read_ledger(crashed_run), files=[str(crashed_run)], title="t")
    assert outcomes_by_chunk(data) == {
        "c1": ["done"],
        "c2": ["failed", "done"],
        "c3": ["cut_off"],
        "c6": ["reconciled"],
        "c7": ["failed"],
        "c5": ["running"],
    }
    assert tuple(OUTCOMES.index(o) for o in OUTCOMES) == (DONE, FAILED, CUT_OFF, RUNNING, RECONCILED)


def test_cut_off_attempts_end_at_the_last_event_of_their_session(crashed_run: Path) -> None:
    data = build(read_ledger(crashed_run), files=[str(crashed_run)], title="t")
    t0 = data.t0
    assert t0 == ms(T.format(1))  # the earliest attempt; the plan has no attempt
    sessions = {s.id: s for s in data.sessions}
    # s1's last own event is c7's failure at :09; the reconciled completion (:08, written later by
    # reconcile) does not move it, and s2's events are not s1's.
    assert sessions["s1"].last == ms(T.format(9)) - t0
    assert (sessions["s1"].ended, sessions["s1"].cut_off) == ("cut_off", 1)
    assert (sessions["s2"].ended, sessions["s2"].cut_off) == ("finished", 0)
    assert sessions["s3"].ended == "running"
    ids = data.chunks.id
    bars = {ids[c]: (start, end) for c, start, end in zip(data.attempts.chunk, data.attempts.start, data.attempts.end)}
    assert bars["c3"] == (ms(T.format(3)) - t0, ms(T.format(9)) - t0)
    assert bars["c6"] == (ms(T.format(3)) - t0, ms(T.format(8)) - t0)
    assert (sessions["s1"].host, sessions["s1"].pid) == ("h1", 11)


def test_states_pending_and_time_zone_are_the_ledgers(crashed_run: Path) -> None:
    ledger = read_ledger(crashed_run)
    data = build(ledger, files=[str(crashed_run)], title="t")
    assert data.counts == {str(s): n for s, n in ledger.counts().items()}
    assert data.counts["never_dispatched"] == 1 and data.counts["running"] == 1
    assert [data.chunks.id[i] for i in data.pending] == ledger.pending() == ["c3", "c7", "c4"]
    assert (data.offset, data.offset_minutes) == ("+08:00", 480)
    assert data.generated.endswith("+08:00")
    states = dict(zip(data.chunks.id, (data.states[s] for s in data.chunks.state)))
    assert states == {c.chunk_id: str(c.state) for c in ledger}
    errors = {data.chunks.id[i]: data.strings[e] for i, e in enumerate(data.chunks.error) if e >= 0}
    assert errors == {"c7": "took too long"}


def test_failures_by_error_type_and_tokens_by_batch_and_agent(crashed_run: Path) -> None:
    data = build(read_ledger(crashed_run), files=[str(crashed_run)], title="t", price=2.0)
    failures = {f.error_type: (f.attempts, f.failed_now, f.example) for f in data.failures}
    assert failures == {"QuotaError": (1, 0, "quota gone"), "Timeout": (1, 1, "took too long")}
    by_batch = {g.group: (g.chunks, g.tokens, g.cost) for g in data.by_batch}
    assert by_batch["b1"] == (2, 150, 0.3)
    assert by_batch["b2"] == (3, 10, 0.02)
    assert {g.group: g.tokens for g in data.by_agent} == {"router": 150, "grader": 10, "(no agent)": 0}
    assert (data.tokens, data.cost) == (160, 0.32)


def test_a_journal_without_offsets_reads_as_utc(tmp_path: Path) -> None:
    path = write_journal(
        tmp_path / "j.jsonl", [dispatched("c1", ts="2026-05-27T13:22:01"), completed("c1", ts="2026-05-27T13:22:09")]
    )
    data = build(read_ledger(path), files=[str(path)], title="t")
    assert (data.offset, data.offset_minutes) == ("+00:00", 0)


def embedded(page: bytes) -> dict[str, object]:
    text = page.decode()
    start = text.index(DATA_START) + len(DATA_START)
    end = text.index("</script>", start)
    decoded: dict[str, object] = json.loads(text[start:end])
    return decoded


def test_the_data_cannot_break_out_of_its_script_element(tmp_path: Path) -> None:
    hostile = "</script><script>window.pwned = 1</script><!-- "
    path = write_journal(tmp_path / "j.jsonl", [dispatched("c<!--1"), failed("c<!--1", error=hostile)])
    page = render_page(build(read_ledger(path), files=[str(path)], title="<b>t</b>"))
    assert page.count(b"</script>") == 2 and page.count(b"<!--") == 0  # the data's and the page script's
    data = embedded(page)
    assert hostile in data["strings"]  # type: ignore[operator]
    assert data["chunks"]["id"] == ["c<!--1"]  # type: ignore[index]
    assert b"<title>&lt;b&gt;t&lt;/b&gt; " in page


def test_the_page_loads_nothing_from_anywhere(crashed_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = run("spanjournal", "report", crashed_run, "-o", out)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{out}\n"
    page = out.read_text()
    for needle in (
        r"\bsrc\s*=",
        r"\bhref\s*=",
        r"<link\b",
        r"@import",
        r"url\(",
        r"fetch\(",
        r"XMLHttpRequest",
        r"import\(",
    ):
        assert not re.search(needle, page), f"{needle!r} in the page"
    assert not re.search(r"https?://", page), "the page names a URL"
    data = embedded(out.read_bytes())
    assert data["chunks"]["id"] == [c.chunk_id for c in read_ledger(crashed_run)]  # type: ignore[index]
    assert stat.S_IMODE(out.stat().st_mode) == 0o600  # it holds what the journal holds
    assert "<title>run.jsonl · spanjournal report</title>" in page  # named after the journal by default
    titled = run("spanjournal", "report", crashed_run, "-o", out, "--title", "Bench <1>")
    assert titled.returncode == 0 and "<title>Bench &lt;1&gt; · spanjournal report</title>" in out.read_text()


def test_bad_input_is_one_line_and_exit_2(crashed_run: Path, tmp_path: Path) -> None:
    cases = [
        (["report", tmp_path / "missing.jsonl", "-o", tmp_path / "r.html"], "missing.jsonl"),
        (["report", crashed_run, "-o", tmp_path / "no-such-dir" / "r.html"], "no such directory"),
        (["report", crashed_run, "-o", tmp_path], "is a directory"),
        (["report", crashed_run, "--price-per-1k-tokens", "-1", "-o", tmp_path / "r.html"], "non-negative"),
        (["report", crashed_run], "-o"),
    ]
    for args, says in cases:
        result = run("spanjournal", *args)
        assert result.returncode == 2, (args, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr
        assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1  # argparse adds its usage
    assert not (tmp_path / "r.html").exists()


def test_help_explains_and_shows_examples() -> None:
    result = run("spanjournal", "report", "--help")
    assert result.returncode == 0
    assert (
        "self-contained HTML" in result.stdout and "spanjournal report runs/bench.jsonl -o report.html" in result.stdout
    )
    assert "report" in run("spanjournal", "--help").stdout


@pytest.mark.integration
def test_the_demo_ends_by_writing_its_report_and_printing_its_path(tmp_path: Path) -> None:
    run_dir = tmp_path / "demo"
    demo = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py"), "--dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    report = run_dir.resolve() / "report.html"
    assert f"report: {report}" in demo.stdout
    data = embedded(report.read_bytes())
    assert len(data["chunks"]["id"]) == 50  # type: ignore[index,arg-type]
    assert data["counts"]["done"] == 50  # type: ignore[index]
