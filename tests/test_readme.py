"""The README's Quick start runs as written: its Python block, copied into a file and run in an empty
directory, makes a journal that ``pending`` answers from, as the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BIN = Path(sys.executable).parent


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def test_the_quick_start_runs_as_written(tmp_path: Path) -> None:
    quick_start = section("Quick start")
    (program,) = code_blocks(quick_start, "python")
    (tmp_path / "quickstart.py").write_text(program)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "SPANJOURNAL_"))}
    ran = subprocess.run(
        [sys.executable, "quickstart.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stderr == ""

    (shell,) = code_blocks(quick_start, "console")
    commands = [line[2:] for line in shell.splitlines() if line.startswith("$ ")]
    assert commands[0] == "pending runs/bench.jsonl"
    pending = subprocess.run(
        [str(BIN / "pending"), "runs/bench.jsonl"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert pending.returncode == 0, pending.stderr
    # the output the README shows is the output it gets
    shown = shell.split("$ pending runs/bench.jsonl\n", 1)[1].split("$ ", 1)[0].rstrip("\n").splitlines()
    assert pending.stdout.splitlines() == shown
    assert len(list((tmp_path / "responses").iterdir())) == 50 - len(pending.stdout.split())
