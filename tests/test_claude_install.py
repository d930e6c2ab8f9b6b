"""``spanjournal claude-install``: merges its hook entries into Claude Code's settings, idempotently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SPANJOURNAL = str(Path(sys.executable).parent / "spanjournal")
EVENTS = ("PreToolUse", "PostToolUse", "PostToolUseFailure")

THEIRS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test)"]},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/bin/guard.sh"}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
}


def install(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None if home is None else {**os.environ, "HOME": str(home)}
    return subprocess.run(
        [SPANJOURNAL, "claude-install", *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def ours(settings: dict[str, Any], event: str) -> list[dict[str, Any]]:
    return [
        h
        for group in settings["hooks"].get(event, [])
        for h in group["hooks"]
        if "claude-hook" in h["command"] and group.get("matcher") == "Task|Agent"
    ]


def test_install_keeps_other_hooks_and_a_second_run_changes_nothing(tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    original = json.dumps(THEIRS, indent=4)
    settings.write_text(original)

    r = install("--project", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("added ") == 3
    data = json.loads(settings.read_text())
    assert data["model"] == "opus" and data["permissions"] == THEIRS["permissions"]
    assert data["hooks"]["Stop"] == THEIRS["hooks"]["Stop"]
    assert data["hooks"]["PreToolUse"][0] == THEIRS["hooks"]["PreToolUse"][0]
    for event in EVENTS:
        (hook,) = ours(data, event)
        assert hook["type"] == "command"
        assert hook["command"] == f"{SPANJOURNAL} claude-hook"
    backup = tmp_path / ".claude" / "settings.json.bak"
    assert backup.read_text() == original

    after_first = settings.read_bytes()
    r = install("--project", str(tmp_path))
    assert r.returncode == 0
    assert r.stdout.count("unchanged ") == 3 and "added" not in r.stdout
    assert settings.read_bytes() == after_first
    assert backup.read_text() == original


def test_install_with_a_journal_and_uninstall_removes_only_ours(tmp_path: Path) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(json.dumps(THEIRS))
    assert install("--project", str(tmp_path), "--journal", "runs/claude.jsonl").returncode == 0
    data = json.loads(settings.read_text())
    assert ours(data, "PostToolUse")[0]["command"].endswith(f"claude-hook --journal {Path.cwd() / 'runs/claude.jsonl'}")

    r = install("--project", str(tmp_path), "--uninstall")
    assert r.returncode == 0
    assert r.stdout.count("removed ") == 3
    assert json.loads(settings.read_text()) == THEIRS
    r = install("--project", str(tmp_path), "--uninstall")
    assert "no spanjournal hook to remove" in r.stdout


def test_a_changed_command_is_updated_in_place(tmp_path: Path) -> None:
    assert install("--project", str(tmp_path), "--command", "/old/venv/bin/spanjournal claude-hook").returncode == 0
    r = install("--project", str(tmp_path))
    assert r.stdout.count("updated ") == 3
    data = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    for event in EVENTS:
        assert [h["command"] for h in ours(data, event)] == [f"{SPANJOURNAL} claude-hook"]


def test_user_settings_are_under_home(tmp_path: Path) -> None:
    assert install("--user", home=tmp_path).returncode == 0
    data = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    assert set(data["hooks"]) == set(EVENTS)
    assert not (tmp_path / ".claude" / "settings.json.bak").exists()  # there was no file to keep


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON (line 1)"),
        ("[1, 2]", "not a settings object"),
        ('{"hooks": {"PreToolUse": {"matcher": "Bash"}}}', '"hooks" is not an object of lists'),
    ],
)
def test_a_settings_file_it_cannot_read_is_never_clobbered(tmp_path: Path, content: str, message: str) -> None:
    settings = tmp_path / ".claude" / "settings.json"
    settings.parent.mkdir()
    settings.write_text(content)
    r = install("--project", str(tmp_path))
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.splitlines()) == 1
    assert settings.read_text() == content
    assert not (tmp_path / ".claude" / "settings.json.bak").exists()


def test_installed_hook_command_runs(tmp_path: Path) -> None:
    assert install("--project", str(tmp_path)).returncode == 0
    data = json.loads((tmp_path / ".claude" / "settings.json").read_text())
    command = ours(data, "PreToolUse")[0]["command"]
    r = subprocess.run(command + " --help", shell=True, capture_output=True, text=True, check=False)
    assert r.returncode == 0 and "Claude Code command hook" in r.stdout


def test_bad_project_directory(tmp_path: Path) -> None:
    r = install("--project", str(tmp_path / "missing"))
    assert r.returncode == 2 and "not a directory" in r.stderr
