"""``claude-install``: add (or remove) the ``claude-hook`` entries in Claude Code's settings.

Claude Code reads hooks from ``settings.json``::

    {"hooks": {"PreToolUse": [{"matcher": "Task|Agent",
                               "hooks": [{"type": "command", "command": "... claude-hook"}]}],
               ...}}

This command merges one such entry per event (``PreToolUse``,
``PostToolUse``, ``PostToolUseFailure``) into the file, keeping every other
setting and hook as it is. Running it again changes nothing. Before a file is
changed, its previous content is kept in ``settings.json.bak``; the new
content replaces the file in one rename. ``--uninstall`` removes only the
entries whose command runs ``claude-hook`` of spanjournal.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spanjournal.claude import SUBAGENT_EVENTS, SUBAGENT_MATCHER
from spanjournal.cli._command import EXIT_OK, CliError, add_command

if TYPE_CHECKING:
    from spanjournal.cli._command import Subparsers

#: Seconds Claude Code gives the hook (it is usually done in tens of milliseconds).
HOOK_TIMEOUT_SECONDS = 30

DESCRIPTION = """\
Add the spanjournal hook to Claude Code's settings: every sub-agent (Task or
Agent tool call) is journaled, and a resumed session does not run again the
sub-agents that already finished. Other settings and hooks are kept; running
it twice changes nothing; the previous file is kept as settings.json.bak.

--project DIR writes DIR/.claude/settings.json (default: the current
directory); --user writes ~/.claude/settings.json."""

EPILOG = """\
examples:
  spanjournal claude-install                       # this project
  spanjournal claude-install --user                # every project of this user
  spanjournal claude-install --journal ~/runs/claude.jsonl
  spanjournal claude-install --uninstall
"""


def register(subparsers: Subparsers) -> None:
    """Add ``spanjournal claude-install``."""
    parser = add_command(
        subparsers,
        "claude-install",
        help="add the spanjournal hook to Claude Code's settings",
        description=DESCRIPTION,
        epilog=EPILOG,
        handler=run,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--project", metavar="DIR", help="the project whose .claude/settings.json is changed")
    where.add_argument("--user", action="store_true", help="change ~/.claude/settings.json")
    parser.add_argument("--journal", metavar="PATH", help="journal file the hook writes (default: per project)")
    parser.add_argument(
        "--command",
        metavar="CMD",
        help="the command Claude Code runs (default: this installation's spanjournal claude-hook)",
    )
    parser.add_argument("--uninstall", action="store_true", help="remove the spanjournal hook entries")


def run(args: argparse.Namespace) -> int:
    settings = settings_path(args)
    data = load_settings(settings)
    if args.uninstall:
        changes = uninstall(data)
    else:
        command = args.command or hook_command(args.journal)
        changes = install(data, command)
    changed = [c for c in changes if not c.startswith("unchanged")]
    if changed:
        write_settings(settings, data)
    for line in changes:
        print(f"{settings}: {line}")
    if not changes:
        print(f"{settings}: no spanjournal hook to remove")
    return EXIT_OK


def settings_path(args: argparse.Namespace) -> Path:
    if args.user:
        return Path.home() / ".claude" / "settings.json"
    project = Path(args.project) if args.project else Path.cwd()
    if not project.is_dir():
        raise CliError(f"--project {args.project}: not a directory")
    return project / ".claude" / "settings.json"


def hook_command(journal: str | None) -> str:
    """The command line Claude Code runs: this installation's ``spanjournal``, absolute."""
    script = Path(sys.executable).parent / "spanjournal"
    found = str(script) if script.is_file() else shutil.which("spanjournal") or "spanjournal"
    words = [found, "claude-hook"]
    if journal:
        words += ["--journal", os.path.abspath(journal)]
    return shlex.join(words)


def is_ours(hook: Any) -> bool:
    """Whether a hook entry runs spanjournal's ``claude-hook``."""
    if not isinstance(hook, dict) or not isinstance(hook.get("command"), str):
        return False
    try:
        words = shlex.split(hook["command"])
    except ValueError:
        return False
    return "claude-hook" in words and any(Path(w).name in ("spanjournal", "spanjournal.cli") for w in words)


def load_settings(path: Path) -> dict[str, Any]:
    """The settings in ``path`` ({} if there is no file); a one-line error for a file that is not settings."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{path}: not JSON (line {exc.lineno}): fix it or move it away; nothing was changed") from None
    if not isinstance(data, dict):
        raise CliError(f"{path}: not a settings object; nothing was changed")
    hooks = data.get("hooks")
    if hooks is not None and not (isinstance(hooks, dict) and all(isinstance(v, list) for v in hooks.values())):
        raise CliError(f'{path}: "hooks" is not an object of lists; nothing was changed')
    return data


def install(data: dict[str, Any], command: str) -> list[str]:
    """Add (or update) one entry per event in ``data``; return what was done, one line each."""
    hooks = data.setdefault("hooks", {})
    changes = []
    for event in SUBAGENT_EVENTS:
        groups: list[Any] = hooks.setdefault(event, [])
        ours = [h for g in groups if isinstance(g, dict) for h in g.get("hooks", []) if is_ours(h)]
        if ours:
            stale = [h for h in ours if h.get("command") != command]
            for h in stale:
                h["command"] = command
            changes.append(f"updated {event} hook: {command}" if stale else f"unchanged {event} hook: {command}")
            continue
        groups.append(
            {
                "matcher": SUBAGENT_MATCHER,
                "hooks": [{"type": "command", "command": command, "timeout": HOOK_TIMEOUT_SECONDS}],
            }
        )
        changes.append(f"added {event} hook: {command}")
    return changes


def uninstall(data: dict[str, Any]) -> list[str]:
    """Remove spanjournal's entries (and the groups and events they leave empty); return what was removed."""
    hooks = data.get("hooks")
    if not isinstance(hooks, dict):
        return []
    changes = []
    for event in list(hooks):
        groups = hooks[event]
        kept_groups = []
        for group in groups:
            if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
                kept_groups.append(group)
                continue
            kept = [h for h in group["hooks"] if not is_ours(h)]
            for h in group["hooks"]:
                if is_ours(h):
                    changes.append(f"removed {event} hook: {h['command']}")
            if kept:
                group["hooks"] = kept
                kept_groups.append(group)
            elif len(kept) == len(group["hooks"]):
                kept_groups.append(group)
        if kept_groups:
            hooks[event] = kept_groups
        elif groups:
            del hooks[event]
    if not hooks and changes:
        del data["hooks"]
    return changes


def write_settings(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` in one rename, keeping the old file as ``<name>.bak``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o644
        if path.exists():
            mode = path.stat().st_mode & 0o777
            shutil.copy2(path, path.with_name(path.name + ".bak"))
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=2, ensure_ascii=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}") from None
