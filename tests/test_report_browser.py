"""The report in a real headless browser (Debian's ``chromium``): what the rendered page shows.

The demo's journal (the router benchmark after its quota cliff, then
``reconcile --apply``) is written as a report and opened in chromium; the
checks read the DOM the page's script built (not the HTML file), the
pixels of a screenshot, and the page's answer to a filter typed with real
key events over the DevTools protocol. A 100,000-chunk journal checks that a
large run opens, aggregates its timeline and scrolls its list. Expected
values come from the journal's lines read with ``json`` and from ``pending
--json``, not from the report's own code.

The browser is chromium in headless mode with its time zone set to New York,
so times shown in the journal's +08:00 prove they do not come from the
machine's zone. Without chromium these tests skip, unless
``SPANJOURNAL_REQUIRE_TOOLS=1`` (CI) makes that a failure. With
``SPANJOURNAL_UPDATE_DOCS=1`` the screenshot is also saved as
``docs/report.png`` (the README's).
"""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_journals import run
from headless_chromium import Chromium, chromium_path, colour_counts, luminance_variance, png_pixels, run_headless
from large_journal import LargeRun, write_large_run

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
BENCHMARK = ROOT / "examples" / "router_benchmark.py"
DOCS = ROOT / "docs"
DONE_RGB = (0x00, 0x9E, 0x73)
CUT_OFF_RGB = (0xE6, 0x9F, 0x00)
FAILED_RGB = (0xD5, 0x5E, 0x00)


@pytest.fixture(scope="module", autouse=True)
def browser_installed() -> None:
    if chromium_path() is None:
        if os.environ.get("SPANJOURNAL_REQUIRE_TOOLS") == "1":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed")


@pytest.fixture(autouse=True)
def browser_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")


def env_without_otel(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_"))}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


class DemoRun:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.journal = directory / "journal.jsonl"
        self.report = directory / "report.html"
        self.lines: list[dict[str, Any]] = [json.loads(line) for line in self.journal.read_text().splitlines()]
        result = run("pending", self.journal, "--json")
        assert result.returncode == 0, result.stderr
        self.pending: list[dict[str, Any]] = json.loads(result.stdout)

    def cut_off(self) -> set[str]:
        """Chunks with a dispatch no completion of any kind (reconciled included) answers."""
        completed = {e["span_id"] for e in self.lines if e["event"] == "subagent_completed"}
        return {
            e["chunk_id"] for e in self.lines if e["event"] == "subagent_dispatched" and e["span_id"] not in completed
        }

    def writer_stopped(self) -> str:
        """The crashed session's last own event, as the page should print it (the journal's +08:00)."""
        crashed = next(e["session_id"] for e in self.lines if e["event"] == "subagent_dispatched")
        last = max(e["ts"] for e in self.lines if e.get("session_id") == crashed and not e.get("reconciled"))
        assert last.endswith("+08:00")
        return f"{last[:10]} {last[11:23]} +08:00"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo's run after the quota cliff and reconcile, in Kuala Lumpur time, and its report."""
    directory = tmp_path_factory.mktemp("demo")
    env = env_without_otel(SPANJOURNAL_TZ="Asia/Kuala_Lumpur")
    crash = subprocess.run(
        [sys.executable, str(BENCHMARK), "--dir", "."],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert crash.returncode == 3, crash.stdout + crash.stderr
    assert run("spanjournal", "reconcile", "journal.jsonl", "--apply", cwd=directory).returncode == 0
    result = run("spanjournal", "report", "journal.jsonl", "-o", "report.html", cwd=directory)
    assert result.returncode == 0, result.stderr
    return DemoRun(directory)


ROW = re.compile(
    r'<div class="row[^"]*" role="row" data-chunk="\d+" data-state="(\w+)"[^>]*><span class="mono" title="([^"]*)"'
)


def rows_in(dom: str, list_id: str) -> list[tuple[str, str]]:
    """(chunk id, state) of the rows the page drew in one of its lists."""
    start = dom.index(f'id="{list_id}"')
    end = dom.find('role="table"', dom.index('role="table"', start) + 1)  # the next list
    return [(html.unescape(chunk), state) for state, chunk in ROW.findall(dom[start : end if end > 0 else None])]


def test_the_rendered_page_shows_pending_chunks_cut_off_attempts_and_the_timeline(
    demo: DemoRun, browser: Chromium
) -> None:
    # Read from the live page once it says it is ready (a frame, then a task): `--dump-dom` under a
    # virtual time budget could dump before headless Chromium drew that frame on a busy machine.
    browser.open(demo.report)
    browser.wait_for("document.documentElement.dataset.ready")
    dom = browser.evaluate("document.documentElement.outerHTML")
    assert 'data-ready="1"' in dom
    # the pending list: what `pending` prints, in its order, with the same states
    assert demo.pending, "the crashed demo leaves chunks to retry"
    assert rows_in(dom, "pending-list") == [(c["chunk_id"], c["state"]) for c in demo.pending]
    assert {c["state"] for c in demo.pending} == {"failed", "unfinished", "never_dispatched"}
    # the attempts cut off by the crash, and the moment the writer stopped, in the journal's time zone
    cut_off = demo.cut_off()
    assert cut_off
    shown = {html.unescape(m) for m in re.findall(r'<code class="cut-off" data-chunk="\d+">([^<]+)</code>', dom)}
    assert shown == cut_off
    assert f"<b>writer stopped</b> at {demo.writer_stopped()} with {len(cut_off)} attempts in flight" in dom
    assert "times in UTC+08:00" in dom
    # the timeline: one row per dispatched chunk, one bar per attempt, the cut-off ones marked
    canvas = re.search(r"<canvas id=\"timeline\"[^>]*>", dom)
    assert canvas is not None
    attrs = dict(re.findall(r'data-([\w-]+)="([^"]*)"', canvas.group(0)))
    dispatches = [e for e in demo.lines if e["event"] == "subagent_dispatched"]
    assert attrs["mode"] == "chunk"
    assert int(attrs["rows"]) == len({e["chunk_id"] for e in dispatches})
    assert int(attrs["bars"]) == len(dispatches)
    assert int(attrs["cut-off"]) == len(cut_off)
    assert int(attrs["stops"]) == 1


def test_a_screenshot_shows_the_timeline_in_its_colours(demo: DemoRun, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = run_headless(
        ["--window-size=1400,1000", "--virtual-time-budget=5000", f"--screenshot={shot}", demo.report.as_uri()]
    )
    assert shot.exists(), result.stderr[-2000:]
    width, height, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1400, 1000)
    assert luminance_variance(rows) > 100, "the screenshot is blank"
    colours = colour_counts(rows)
    # bars of done, failed and cut-off attempts (exact colours: the inside of filled rectangles)
    assert colours.get(DONE_RGB, 0) > 500
    assert colours.get(FAILED_RGB, 0) > 50
    assert colours.get(CUT_OFF_RGB, 0) > 50
    if os.environ.get("SPANJOURNAL_UPDATE_DOCS") == "1":
        DOCS.mkdir(exist_ok=True)
        (DOCS / "report.png").write_bytes(shot.read_bytes())


@pytest.fixture
def browser() -> Iterator[Chromium]:
    with Chromium(1400, 1000) as b:
        yield b


def js_list(ids: list[str]) -> str:
    """``ids`` as the page's ``JSON.stringify`` writes them, quoted as a JavaScript string."""
    return json.dumps(json.dumps(ids, separators=(",", ":")))


PENDING_ROWS = "[...document.querySelectorAll('#pending-list .row[data-chunk]')].map(r => r.firstChild.textContent)"


def test_a_filter_typed_into_the_page_narrows_the_list(demo: DemoRun, browser: Chromium) -> None:
    browser.open(demo.report)
    browser.wait_for("document.documentElement.dataset.ready")
    before = browser.evaluate(PENDING_ROWS)
    assert before == [c["chunk_id"] for c in demo.pending]
    browser.type_text("#q", "batch-3")
    expected = [c["chunk_id"] for c in demo.pending if c["chunk_id"].startswith("batch-3-")]
    assert 0 < len(expected) < len(before)
    browser.wait_for(f"JSON.stringify({PENDING_ROWS}) === {js_list(expected)}")
    assert browser.evaluate("document.getElementById('match').textContent") == "10 of 50 chunks match"
    assert browser.evaluate("document.getElementById('timeline').dataset.rows") == "10"  # batch-3's ten chunks
    assert browser.evaluate("location.hash") == "#q=batch-3"
    # a state chosen from the page's own select narrows it further
    browser.evaluate(
        "(() => { const s = document.getElementById('state'); s.value = 'failed';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    failed = [c["chunk_id"] for c in demo.pending if c["chunk_id"].startswith("batch-3-") and c["state"] == "failed"]
    browser.wait_for(f"JSON.stringify({PENDING_ROWS}) === {js_list(failed)}")


# -- a large run ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> tuple[LargeRun, Path]:
    directory = tmp_path_factory.mktemp("large")
    made = write_large_run(directory / "large.jsonl", chunks=100_000)
    report = directory / "large.html"
    result = run("spanjournal", "report", made.path, "-o", report)
    assert result.returncode == 0, result.stderr
    return made, report


def test_a_100000_chunk_report_opens_aggregated_and_scrolls(large: tuple[LargeRun, Path], browser: Chromium) -> None:
    made, report = large
    browser.open(report)
    browser.wait_for("document.documentElement.dataset.ready")
    timeline = browser.evaluate("({...document.getElementById('timeline').dataset})")
    assert timeline["mode"] != "chunk" and 1 < int(timeline["rows"]) <= 150  # rows per batch, not per chunk
    assert int(timeline["bars"]) == made.attempts
    assert int(timeline["cutOff"]) == len(made.cut_off)
    assert browser.evaluate("document.getElementById('chunks-title').textContent") == "All chunks: 100,000"
    drawn = browser.evaluate("document.querySelectorAll('#chunks-list .row[data-chunk]').length")
    assert 0 < drawn < 100  # only the rows in view are in the page
    # scroll the list to its end: the last chunk is drawn
    browser.evaluate("document.getElementById('chunks-list').scrollTop = 1e9")
    last = "batch-099-case-099999"
    browser.wait_for(
        "[...document.querySelectorAll('#chunks-list .row[data-chunk]')]"
        f".some(r => r.firstChild.textContent === '{last}')"
    )
    pending = browser.evaluate("document.getElementById('pending-title').textContent")
    assert pending.startswith(f"Pending: {len(made.pending):,} chunks to retry")
    # filtered down to a hundred chunks, the timeline shows them one by one again
    browser.type_text("#q", "case-0420")
    browser.wait_for("document.getElementById('timeline').dataset.mode === 'chunk'")
    assert browser.evaluate("document.getElementById('timeline').dataset.rows") == "100"


def test_times_are_the_journals_to_the_millisecond(tmp_path: Path) -> None:
    """Shown as the journal reads, truncated: .149960 is .149 (never rounded up to .150)."""
    from cli_journals import completed, dispatched, write_journal

    journal = write_journal(
        tmp_path / "j.jsonl",
        [
            dispatched("c1", ts="2026-05-27T13:22:01.000000+08:00", host="h", pid=1),
            dispatched("c2", ts="2026-05-27T13:22:01.999999+08:00", host="h", pid=1),
            completed("c2", ts="2026-05-27T13:22:05.149960+08:00"),
        ],
    )
    report = tmp_path / "j.html"
    assert run("spanjournal", "report", journal, "-o", report).returncode == 0
    dom = run_headless(["--virtual-time-budget=5000", "--dump-dom", report.as_uri()]).stdout
    assert "<b>writer stopped</b> at 2026-05-27 13:22:05.149 +08:00 with 1 attempt in flight" in dom
    assert "first event 2026-05-27 13:22:01.000 +08:00" in dom
