"""What the fault, hostile-agent and git-fault suites share: "nothing lost" snapshots and runs.

`preserve(repo)` records what a run must never lose or change in the user's repository: every
ref, every commit reachable from any ref, HEAD, the index and the bytes of every file in the
working tree. `assert_nothing_lost` compares a later snapshot with it: a ref may only have moved
forward, every commit that was reachable still is, and the user's checkout is byte-identical.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_team.scripted import ScriptedCall
from agent_team.state import STATE_RELATIVE_PATH

from tests.orchestration_helpers import git, read_state

ROOT = Path(__file__).resolve().parents[1]
FILE_BASED = ROOT / "scripts" / "orchestration" / "file_based_orchestrator.py"
SKIPPED = (".git", ".ai-agents")


@dataclass(frozen=True)
class Preserved:
    """What the user's repository held at one moment."""

    refs: dict[str, str]
    commits: frozenset[str]
    head: bytes
    index: bytes | None
    files: dict[str, bytes]


def working_files(repo: Path) -> dict[str, bytes]:
    """Every file of the user's working tree (links by target), outside .git and .ai-agents."""
    found: dict[str, bytes] = {}
    for directory, dirnames, filenames in os.walk(repo):
        here = Path(directory)
        if here == repo:
            dirnames[:] = [d for d in dirnames if d not in SKIPPED]
        for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
            path = here / name
            rel = path.relative_to(repo).as_posix()
            found[rel] = (b"link:" + os.readlink(path).encode() if path.is_symlink()
                          else path.read_bytes())
    return found


def preserve(repo: Path) -> Preserved:
    """Snapshot the repository; the index and HEAD are read before any git command runs."""
    git_dir = repo / ".git"
    index = (git_dir / "index").read_bytes() if (git_dir / "index").exists() else None
    head = (git_dir / "HEAD").read_bytes()
    files = working_files(repo)
    refs = dict(
        line.split(" ", 1)[::-1]
        for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
    )
    commits = frozenset(git(repo, "rev-list", "--all").split()) if refs else frozenset()
    return Preserved(refs, commits, head, index, files)


def is_ancestor(repo: Path, old: str, new: str) -> bool:
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", old, new],
                          capture_output=True, check=False)
    return done.returncode == 0


def assert_nothing_lost(repo: Path, before: Preserved, *, checkout: bool = True) -> Preserved:
    """Nothing that existed in `before` is gone; with `checkout`, the user's files are as they were.

    Returns the new snapshot, so a test can chain checks across phases of a run.
    """
    after = preserve(repo)
    for ref, sha in before.refs.items():
        assert ref in after.refs, f"{ref} was deleted (it was at {sha})"
        moved = after.refs[ref]
        assert moved == sha or is_ancestor(repo, sha, moved), (
            f"{ref} moved from {sha} to {moved}, which does not contain it")
    lost = before.commits - after.commits
    assert not lost, f"commits no longer reachable from any ref: {sorted(lost)}"
    if checkout:
        assert after.head == before.head, "the user's HEAD changed"
        assert after.index == before.index, "the user's index (.git/index) changed"
        assert after.files == before.files, _files_diff(before.files, after.files)
    return after


def _files_diff(before: Mapping[str, bytes], after: Mapping[str, bytes]) -> str:
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    return f"the user's working tree changed: {changed}"


def dirty_the_checkout(repo: Path) -> None:
    """Give the user an unstaged edit, a staged file, a deletion and untracked text and bytes."""
    (repo / "app.txt").write_text("greeting = my local edit\n", encoding="utf-8")
    (repo / "staged.txt").write_text("staged by the user\n", encoding="utf-8")
    git(repo, "add", "staged.txt")
    (repo / "README.md").unlink()
    (repo / "notes.bin").write_bytes(b"my notes\x00\xff\xfe\n")
    (repo / "scratch").mkdir()
    (repo / "scratch" / "idea.txt").write_text("untracked idea\n", encoding="utf-8")


def state_path(repo: Path) -> Path:
    return repo / STATE_RELATIVE_PATH


def assert_state_valid(repo: Path) -> dict[str, Any]:
    """The state file parses and validates; returns it."""
    return read_state(repo)


def tool_messages(call: ScriptedCall) -> list[tuple[str, str, bool]]:
    """(tool name, content, is_error) of every tool result the model had been sent."""
    return [(m.name or "", m.content, m.is_error) for m in call.messages if m.role == "tool"]


def cli_args(project: Path, session: Path, *extra: str) -> list[str]:
    """Arguments of the file-based orchestrator's command line for a scripted run."""
    return [sys.executable, str(FILE_BASED), "--project-dir", str(project), "--api-provider",
            "scripted", "--session", str(session), "--no-progress", *extra]


def clean_env() -> dict[str, str]:
    """The environment for orchestrator subprocesses: no keys, no bytecode files."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def read_json(path: Path) -> dict[str, Any] | None:
    """The state file as JSON while another process writes it; None when unreadable yet."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
