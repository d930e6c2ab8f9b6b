"""The examples tell a true story: run them as real processes and check it from the files.

The router benchmark dies at its quota cliff; ``pending``, ``spanjournal
reconcile --apply`` and ``--resume`` then recover exactly what was lost.
Every expectation is computed here from the journal's lines with ``json``
(not with the library's reader) and from the output files themselves, so the
CLI's answers are checked against an independent reading. ``calls.jsonl``
(one line per agent call, written by the benchmark) proves that no chunk
that was done ran again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from otlp_collector import ReceivedSpan, RotelCollector, rotel_available

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BENCHMARK = EXAMPLES / "router_benchmark.py"
DEMO = EXAMPLES / "demo.py"
ASYNC_FANOUT = EXAMPLES / "async_fanout.py"

JOURNAL = "journal.jsonl"
CALLS = "calls.jsonl"
EXIT_CLIFF = 3
#: Any one example command; they take about a second each.
COMMAND_TIMEOUT = 60.0
#: The whole demo; it takes a few seconds.
DEMO_BUDGET = 30.0


# -- running things ----------------------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without OpenTelemetry or spanjournal settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        cwd=cwd,
        env=env if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def console(name: str, *args: str) -> list[str]:
    """A console script of the package (``pending``, ``spanjournal``) with its arguments."""
    script = Path(sys.executable).parent / name
    if script.is_file():
        return [str(script), *args]
    module = [sys.executable, "-m", "spanjournal.cli"]
    return [*module, "pending", *args] if name == "pending" else [*module, *args]


def benchmark(run_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, str(BENCHMARK), "--dir", str(run_dir), *args], run_dir.parent, env)


def pending_ids(run_dir: Path) -> list[str]:
    """What the ``pending`` console command prints, one id a line."""
    done = run(console("pending", JOURNAL), run_dir)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


# -- reading the files independently -------------------------------------------------


def journal_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / JOURNAL).read_text(encoding="utf-8").splitlines() if line]


def dispatches(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "subagent_dispatched"]


def completions(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == "subagent_completed"]


def planned(events: list[dict[str, Any]]) -> set[str]:
    return {c for e in events if e["event"] == "run_planned" for c in e["chunk_ids"]}


def not_done(events: list[dict[str, Any]]) -> set[str]:
    """Every chunk the journal names, minus those with a successful completion."""
    named = planned(events) | {e["chunk_id"] for e in dispatches(events) + completions(events)}
    return named - {e["chunk_id"] for e in completions(events) if e["success"]}


def latest_dispatch(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["chunk_id"]: e for e in dispatches(events)}


def unfinished(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Chunks not done whose latest dispatch has no completion: chunk id -> that dispatch."""
    completed_spans = {e["span_id"] for e in completions(events)}
    open_chunks = not_done(events)
    return {
        c: d for c, d in latest_dispatch(events).items() if c in open_chunks and d["span_id"] not in completed_spans
    }


def failed(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Chunks not done whose latest dispatch completed unsuccessfully: chunk id -> that completion."""
    by_span = {e["span_id"]: e for e in completions(events)}
    open_chunks = not_done(events)
    return {
        c: by_span[d["span_id"]]
        for c, d in latest_dispatch(events).items()
        if c in open_chunks and d["span_id"] in by_span
    }


def is_valid_json_file(path: Path) -> bool:
    try:
        json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False
    return True


def calls_per_chunk(run_dir: Path) -> Counter[str]:
    lines = (run_dir / CALLS).read_text(encoding="utf-8").splitlines()
    return Counter(json.loads(line)["chunk_id"] for line in lines if line)


def snapshot(run_dir: Path, relative_paths: set[str]) -> dict[str, tuple[bytes, int]]:
    return {p: ((run_dir / p).read_bytes(), (run_dir / p).stat().st_mtime_ns) for p in relative_paths}


# -- the story -----------------------------------------------------------------------


def test_the_recovery_story(tmp_path: Path) -> None:
    run_dir = tmp_path / "bench"

    crashed = benchmark(run_dir, "--seed", "7")
    assert crashed.returncode == EXIT_CLIFF, crashed.stdout + crashed.stderr
    assert crashed.stderr == "", "no exporter configured: nothing may be logged about one"
    after_crash = journal_lines(run_dir)
    cases = {f"batch-{(n - 1) // 10 + 1}-case-{n:03d}" for n in range(1, 51)}
    assert planned(after_crash) == cases
    dispatched = {d["chunk_id"] for d in dispatches(after_crash)}
    assert dispatched == {c for c in cases if c < "batch-4"}, "batches 1-3 run; the crash comes in batch 3"

    expected_pending = not_done(after_crash)
    listed = pending_ids(run_dir)
    assert len(listed) == len(set(listed))
    assert set(listed) == expected_pending
    lost = unfinished(after_crash)
    quota = failed(after_crash)
    assert lost, "some agents never returned"
    assert quota and all(c["error_type"] == "QuotaError" and "quota" in c["error"] for c in quota.values())
    assert planned(after_crash) - dispatched, "some chunks were never dispatched"
    assert expected_pending == set(lost) | set(quota) | (planned(after_crash) - dispatched)
    assert len(expected_pending) == 25

    valid = {c for c, d in lost.items() if is_valid_json_file(run_dir / d["output_file"])}
    torn = {c for c, d in lost.items() if (run_dir / d["output_file"]).exists()} - valid
    assert valid, "some agents wrote a valid output before dying"
    assert torn, "one agent died halfway through writing: reconcile must not take its file"
    assert set(lost) - valid - torn, "some agents wrote nothing"

    journal_before = (run_dir / JOURNAL).read_bytes()
    reconcile = run(console("spanjournal", "reconcile", JOURNAL, "--apply"), run_dir)
    assert reconcile.returncode == 0, reconcile.stderr
    journal_after = (run_dir / JOURNAL).read_bytes()
    assert journal_after.startswith(journal_before), "reconcile only appends"
    appended = journal_lines(run_dir)[len(after_crash) :]
    assert {e["chunk_id"] for e in appended} == valid
    for event in appended:
        assert event["event"] == "subagent_completed" and event["success"] and event["reconciled"]
        assert event["span_id"] == lost[event["chunk_id"]]["span_id"]
    retry = expected_pending - valid
    assert set(pending_ids(run_dir)) == retry

    done_chunks = cases - retry
    done_outputs = {latest_dispatch(after_crash)[c]["output_file"] for c in done_chunks}
    before_resume = snapshot(run_dir, done_outputs)
    calls_before = calls_per_chunk(run_dir)
    assert set(calls_before) == dispatched and max(calls_before.values()) == 1

    resumed = benchmark(run_dir, "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    final = journal_lines(run_dir)
    assert not_done(final) == set()
    assert pending_ids(run_dir) == []
    calls_by_resume = calls_per_chunk(run_dir) - calls_before
    assert set(calls_by_resume) == retry, "the resume runs exactly what was pending after reconcile"
    assert set(calls_by_resume.values()) == {1}
    assert not set(calls_by_resume) & done_chunks, "no chunk that was done ran again"
    resume_session = {e["session_id"] for e in final[len(after_crash) + len(appended) :]}
    assert len(resume_session) == 1
    assert {d["chunk_id"] for d in dispatches(final) if d["session_id"] in resume_session} == retry
    assert snapshot(run_dir, done_outputs) == before_resume, "the resume touches nothing else"
    assert all(is_valid_json_file(run_dir / d["output_file"]) for d in latest_dispatch(final).values())

    stats = run(console("spanjournal", "stats", JOURNAL, "--json"), run_dir)
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    assert report["totals"]["done"] == 50 and report["totals"]["retried"] == len(retry & dispatched)
    assert [(g["group"], g["done"]) for g in report["groups"]] == [(f"batch-{b}", 10) for b in range(1, 6)]
    assert report["failures_by_error_type"] == {"QuotaError": len(quota)}


def test_the_demo_tells_the_story_and_cleans_up_when_asked(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    started = time.monotonic()
    demo = run([sys.executable, str(DEMO), "--clean"], tmp_path, clean_env(TMPDIR=str(scratch)))
    seconds = time.monotonic() - started
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert seconds < DEMO_BUDGET
    headings = [line for line in demo.stdout.splitlines() if line.startswith("== ")]
    assert [h.split(".")[0] for h in headings[:6]] == [f"== {n}" for n in range(1, 7)]
    assert headings[6] == "== The story holds =="
    assert "no chunk that was done ran again" in demo.stdout
    assert "[exit 3," in demo.stdout and "recorded done" in demo.stdout
    assert list(scratch.iterdir()) == [], "with --clean the demo removes its temporary run directory"


def test_the_demo_keeps_its_run_directory_and_says_where_and_how_to_remove_it(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    demo = run([sys.executable, str(DEMO)], tmp_path, clean_env(TMPDIR=str(scratch)))
    assert demo.returncode == 0, demo.stdout + demo.stderr
    (run_dir,) = scratch.iterdir()
    assert f"run directory: {run_dir} (every command below runs there)" in demo.stdout
    assert demo.stdout.splitlines()[-2:] == [
        f"files kept in {run_dir}: cd there to try the commands above",
        f"remove them with: rm -rf {run_dir}",
    ]
    # the commands it printed work there afterwards
    pending = run([str(Path(sys.executable).parent / "pending"), JOURNAL, "--exit-code"], run_dir)
    assert pending.returncode == 0, pending.stderr


def test_make_demo_keeps_demo_run_and_replaces_only_a_previous_demo(tmp_path: Path) -> None:
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "demo", "STAMP="],
        cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=True,
    ).stdout.split()  # fmt: skip
    assert recipe[-4:] == ["examples/demo.py", "--dir", "demo-run", "--replace"]
    kept = tmp_path / "demo-run"
    first = run([sys.executable, str(DEMO), "--dir", str(kept), "--replace"], tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    (kept / "mine.txt").write_text("left by the user after the first run")
    again = run([sys.executable, str(DEMO), "--dir", str(kept), "--replace"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not (kept / "mine.txt").exists()  # a previous demo's directory is replaced whole
    assert not_done(journal_lines(kept)) == set()
    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    refused = run([sys.executable, str(DEMO), "--dir", str(other), "--replace"], tmp_path)
    assert refused.returncode == 2
    assert "not empty and not a previous demo's" in refused.stderr
    assert (other / "notes.txt").read_text() == "keep me"


def test_the_demo_keeps_a_directory_it_is_given_and_refuses_a_used_one(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    demo = run([sys.executable, str(DEMO), "--dir", str(kept)], tmp_path)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert not_done(journal_lines(kept)) == set()
    assert max(calls_per_chunk(kept).values()) == 2

    again = run([sys.executable, str(DEMO), "--dir", str(kept)], tmp_path)
    assert again.returncode == 2
    assert "not empty" in again.stderr


def test_the_benchmark_is_deterministic_for_a_seed_and_refuses_to_overwrite_a_run(tmp_path: Path) -> None:
    outcomes = []
    for name in ("a", "b"):
        run_dir = tmp_path / name
        assert benchmark(run_dir, "--seed", "11", "--cliff", "22").returncode == EXIT_CLIFF
        events = journal_lines(run_dir)
        responses = {p.name: p.read_bytes() for p in sorted((run_dir / "responses").iterdir())}
        outcomes.append((sorted(unfinished(events)), sorted(failed(events)), responses))
    assert outcomes[0] == outcomes[1]
    assert len(outcomes[0][0]) + len(outcomes[0][1]) == 8, "agents 23-30 are over the quota"

    journal = (tmp_path / "a" / JOURNAL).read_bytes()
    refused = benchmark(tmp_path / "a")
    assert refused.returncode == 2 and "--resume" in refused.stderr
    assert (tmp_path / "a" / JOURNAL).read_bytes() == journal


def test_async_fanout_journals_coroutines_and_retries_only_the_failures(tmp_path: Path) -> None:
    run_dir = tmp_path / "async"
    first = run([sys.executable, str(ASYNC_FANOUT), "--dir", str(run_dir)], tmp_path)
    assert first.returncode == 0, first.stderr
    events = journal_lines(run_dir)
    docs = {f"doc-{n:02d}" for n in range(12)}
    assert planned(events) == docs
    assert {d["chunk_id"] for d in dispatches(events)} == docs
    assert {d["agent"] for d in dispatches(events)} == {"summariser"}
    spans = {d["span_id"] for d in dispatches(events)}
    assert {c["span_id"] for c in completions(events)} == spans, "every coroutine's dispatch completed"
    quota = failed(events)
    assert set(quota) == {"doc-03", "doc-07", "doc-11"}
    assert all(c["error_type"] == "QuotaError" for c in quota.values())
    done = [c for c in completions(events) if c["success"]]
    assert all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in done), "record() reached each task"
    in_flight = peak = 0
    for event in events:
        in_flight += {"subagent_dispatched": 1, "subagent_completed": -1}.get(event["event"], 0)
        peak = max(peak, in_flight)
    assert peak > 1, "the agents ran concurrently"

    second = run([sys.executable, str(ASYNC_FANOUT), "--dir", str(run_dir)], tmp_path)
    assert second.returncode == 0, second.stderr
    retried = journal_lines(run_dir)[len(events) :]
    assert {d["chunk_id"] for d in dispatches(retried)} == set(quota)
    assert not_done(journal_lines(run_dir)) == set()
    assert "pending: nothing" in second.stdout


@pytest.mark.skipif(not rotel_available(), reason="the rotel package (rotel-agent) is not installed")
def test_the_benchmark_sends_ended_spans_to_otlp_and_only_the_journal_has_the_rest(tmp_path: Path) -> None:
    run_dir = tmp_path / "otlp"
    with RotelCollector() as collector:
        env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint)
        crashed = benchmark(run_dir, env=env)
        assert crashed.returncode == EXIT_CLIFF, crashed.stdout + crashed.stderr
        events = journal_lines(run_dir)
        ended = {c["span_id"] for c in completions(events)}
        received = collector.wait_for_spans(lambda spans: {s.span_id for s in spans} >= ended)
    by_id = {s.span_id: s for s in received}
    assert set(by_id) == ended
    assert {s.service_name for s in received} == {"router-bench"}
    assert not {d["span_id"] for d in unfinished(events).values()} & set(by_id), "in-flight spans never arrive"
    for chunk_id, completion in failed(events).items():
        span = by_id[completion["span_id"]]
        assert span.status_code == "ERROR" and span.attributes["error.type"] == "QuotaError", chunk_id


@dataclass
class DemoWithCollector:
    journal: list[dict[str, Any]]
    spans: list[ReceivedSpan]


@pytest.fixture(scope="module")
def demo_with_collector(tmp_path_factory: pytest.TempPathFactory) -> DemoWithCollector:
    """The demo run with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a real collector (step 7 included)."""
    if not rotel_available():
        pytest.skip("the rotel package (rotel-agent) is not installed")
    run_dir = tmp_path_factory.mktemp("demo-otlp") / "run"
    with RotelCollector() as collector:
        env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint)
        demo = run([sys.executable, str(DEMO), "--dir", str(run_dir)], run_dir.parent, env)
        assert demo.returncode == 0, demo.stdout + demo.stderr
        assert "== 7. export" in demo.stdout
        journal = journal_lines(run_dir)
        ended = {c["span_id"] for c in completions(journal) if not c.get("reconciled")}
        spans = collector.wait_for_spans(lambda received: {s.span_id for s in received} >= ended)
        time.sleep(0.5)
        spans = collector.spans()
    return DemoWithCollector(journal, spans)


def test_the_demo_sends_every_ended_and_every_never_completed_span_once(demo_with_collector: DemoWithCollector) -> None:
    journal, spans = demo_with_collector.journal, demo_with_collector.spans
    received = Counter(s.span_id for s in spans)
    ended = {c["span_id"] for c in completions(journal) if not c.get("reconciled")}
    completed = {c["span_id"] for c in completions(journal)}
    never_completed = {d["span_id"] for d in dispatches(journal)} - completed
    assert never_completed, "the crash left attempts that never completed"
    assert set(received) >= ended | never_completed
    assert set(received.values()) == {1}, "no span is sent twice"
    assert {s.service_name for s in spans} == {"router-bench"}
    rebuilt = [s for s in spans if s.span_id in never_completed]
    assert all(s.status_code == "ERROR" and s.status_message == "no completion recorded" for s in rebuilt)


def test_after_the_demo_the_backend_has_every_attempt(demo_with_collector: DemoWithCollector) -> None:
    received = {s.span_id for s in demo_with_collector.spans}
    reconciled = {c["span_id"] for c in completions(demo_with_collector.journal) if c.get("reconciled")}
    assert reconciled
    assert {d["span_id"] for d in dispatches(demo_with_collector.journal)} <= received
