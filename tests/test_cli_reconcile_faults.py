"""``spanjournal reconcile`` under attack and on odd input: confined, bounded, never the run's end."""

from __future__ import annotations

import collections
import json
import multiprocessing
import multiprocessing.synchronize
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_journals import BIN, assert_clean_exit, dispatched, run, write_journal
from spanjournal.cli import main


def reconcile_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> list[dict[str, object]]:
    assert main(["reconcile", *map(str, argv), "--json"]) == 0
    out = capsys.readouterr().out
    decisions: list[dict[str, object]] = json.loads(out)
    return decisions


# -- 2. a directory swapped for a symlink during the check ----------------------------------------


def _swap_directory_for_symlink(root: str, outside: str, stop: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    out, real = os.path.join(root, "out"), os.path.join(root, "out.real")
    while not stop.is_set():  # each state held a moment: the real directory, then the symlink
        time.sleep(0.0002)
        os.rename(out, real)
        os.symlink(outside, out)
        time.sleep(0.0002)
        os.unlink(out)
        os.rename(real, out)


@pytest.mark.integration
def test_a_directory_swapped_for_a_symlink_never_leads_reconcile_outside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inside, every output is invalid; outside, every one is valid JSON: any 'valid' is an outside read."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "out").mkdir(parents=True)
    outside.mkdir()
    chunks = 60
    for i in range(chunks):
        (root / "out" / f"{i}.json").write_text("not json: the real, unfinished output")
        (outside / f"{i}.json").write_text('{"secret": true}')
    journal = write_journal(
        root / "run.jsonl", [dispatched(f"c{i}", output_file=f"out/{i}.json") for i in range(chunks)]
    )
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    swapper = ctx.Process(target=_swap_directory_for_symlink, args=(str(root), str(outside), stop))
    swapper.start()
    runs, outside_reads, verdicts = 8, 0, collections.Counter[str]()
    try:
        for _ in range(runs):
            for validate in ("json", "checks_outside:is_secret"):
                decisions = reconcile_json(capsys, journal, "--validate", validate)
                assert len(decisions) == chunks
                outside_reads += sum(d["verdict"] == "valid" for d in decisions)
                verdicts.update(str(d["verdict"]) for d in decisions)
    finally:
        stop.set()
        swapper.join(timeout=30)
    print(f"{runs * 2 * chunks} checks during the swaps: {dict(verdicts)}, {outside_reads} outside reads")
    assert outside_reads == 0
    assert set(verdicts) <= {"invalid", "missing", "refused"}


@pytest.fixture(autouse=True)
def _outside_checker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A MODULE:FUNC validator that calls a file valid when it is the outside one."""
    (tmp_path / "checks_outside.py").write_text(
        "def is_secret(path):\n    return path.read_text().startswith('{\"secret\"')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


# -- 3. a chunk's problem is that chunk's ----------------------------------------------------------


def test_odd_outputs_and_timestamps_leave_their_chunk_pending_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "loop.json").symlink_to("loop.json")
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "ok.json").write_text("{}")
    (tmp_path / "year1.json").write_text("{}")
    journal = write_journal(
        tmp_path / "run.jsonl",
        [
            dispatched("loop", output_file="loop.json"),
            dispatched("dir-loop", output_file="a/x.json"),
            dispatched("year1", output_file="year1.json", ts="0001-01-01T00:00:00.000000+08:00"),
            dispatched("year9999", output_file="ok.json", ts="9999-12-31T23:59:59.999999-08:00"),
            dispatched("ok", output_file="ok.json"),
        ],
    )
    decisions = {d["chunk_id"]: (d["verdict"], d["reason"]) for d in reconcile_json(capsys, journal)}
    refused = "refused: a symlink on the way: {} (none is followed)"
    assert decisions["loop"] == ("refused", refused.format(tmp_path / "loop.json"))
    assert decisions["dir-loop"] == ("refused", refused.format(tmp_path / "a"))
    assert decisions["year1"] == ("valid", "valid (json)")
    assert decisions["year9999"][0] == "invalid"  # written before a dispatch in year 9999
    assert decisions["ok"] == ("valid", "valid (json)")


def test_a_file_renamed_while_a_custom_validator_runs_is_still_the_one_checked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "renaming.py").write_text(
        "import os, pathlib\n"
        "def check(path):\n"
        "    os.rename(pathlib.Path.cwd() / 'out.json', pathlib.Path.cwd() / 'moved.json')\n"
        "    return path.read_text() == '{\"mine\": 1}'\n"
    )
    (tmp_path / "out.json").write_text('{"mine": 1}')
    journal = write_journal(tmp_path / "run.jsonl", [dispatched("c", output_file="out.json")])
    result = run("spanjournal", "reconcile", journal, "--validate", "renaming:check", "--json", cwd=tmp_path)
    assert_clean_exit(result, 0)
    assert [(d["verdict"], d["reason"]) for d in json.loads(result.stdout)] == [("valid", "valid (renaming:check)")]


# -- 4. bounded memory ------------------------------------------------------------------------------


def _peak_rss_mib(*argv: str | Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run a console script and return its peak RSS (MiB) and result."""
    code = (
        "import resource, subprocess, sys, json\n"
        "r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps([peak, r.returncode, r.stdout, r.stderr]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(BIN / "spanjournal"), *map(str, argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    peak, rc, stdout, stderr = json.loads(out.stdout)
    return peak, subprocess.CompletedProcess(argv, rc, stdout, stderr)


@pytest.mark.integration
def test_validation_memory_is_bounded_whatever_the_output_size(tmp_path: Path) -> None:
    line = b'{"answer": "' + b"y" * 990 + b'"}\n'
    (tmp_path / "big.jsonl").write_bytes(line * (96 << 10))  # 96 MiB of valid JSON Lines
    (tmp_path / "small.jsonl").write_bytes(line)
    with open(tmp_path / "huge.json", "wb") as f:  # 3 GiB, sparse
        f.truncate(3 << 30)
    for name in ("big", "small", "huge"):
        write_journal(
            tmp_path / f"{name}.jrn.jsonl",
            [dispatched(name, output_file=f"{name}.json" if name == "huge" else f"{name}.jsonl")],
        )
    small_peak, small = _peak_rss_mib("reconcile", tmp_path / "small.jrn.jsonl", "--json")
    big_peak, big = _peak_rss_mib("reconcile", tmp_path / "big.jrn.jsonl", "--json")
    huge_peak, huge = _peak_rss_mib("reconcile", tmp_path / "huge.jrn.jsonl", "--json")
    for result in (small, big, huge):
        assert_clean_exit(result, 0)
    print(f"peak RSS: small {small_peak:.0f} MiB, 96 MiB JSONL {big_peak:.0f} MiB, 3 GiB JSON {huge_peak:.0f} MiB")
    assert [d["verdict"] for d in json.loads(big.stdout)] == ["valid"]
    (decision,) = json.loads(huge.stdout)
    assert decision["verdict"] == "invalid"
    assert decision["reason"] == (
        "invalid (json): 3,072 MiB: over the 256 MiB limit for one JSON document, not validated"
        " (--validate nonempty or MODULE:FUNC to accept it)"
    )
    assert big_peak - small_peak < 24  # MiB: streamed, not read whole (it was about 2x the file)
    assert huge_peak - small_peak < 24


# -- 8. a relative output path means what it meant to the dispatching process ------------------------


def test_relative_outputs_are_taken_from_the_dispatchs_working_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    (work / "out").mkdir(parents=True)
    (work / "out" / "15.json").write_text('{"ok": true}')
    journal = write_journal(
        tmp_path / "runs" / "fake.jsonl",
        [
            dispatched("15", output_file="./out/15.json", cwd=str(work)),
            dispatched("16", output_file="./out/16.json", cwd=str(work)),
            dispatched("17", output_file="out/17.json"),  # no cwd recorded: from the journal's folder
        ],
    )
    decisions = {d["chunk_id"]: (d["verdict"], d["reason"]) for d in reconcile_json(capsys, journal)}
    assert decisions == {
        "15": ("valid", "valid (json)"),
        "16": ("missing", f"output file missing: {work / 'out' / '16.json'}"),
        "17": ("missing", f"output file missing: {tmp_path / 'runs' / 'out' / '17.json'}"),
    }
    # --root confines; a dispatch made elsewhere is outside it, and the reason says where
    runs = tmp_path / "runs"
    decisions = {d["chunk_id"]: (d["verdict"], d["reason"]) for d in reconcile_json(capsys, journal, "--root", runs)}
    assert decisions["15"] == ("refused", f"refused: {work / 'out' / '15.json'} is outside the root {runs}")
    decisions = {d["chunk_id"]: (d["verdict"], d["reason"]) for d in reconcile_json(capsys, journal, "--root", work)}
    assert decisions["15"] == ("valid", "valid (json)")


def test_help_says_what_relative_paths_are_relative_to() -> None:
    result = run("spanjournal", "reconcile", "--help")
    assert_clean_exit(result, 0)
    text = " ".join(result.stdout.split())
    assert "the working directory the dispatching process recorded (cwd)" in text
    assert "256 MiB" in text
