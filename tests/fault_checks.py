"""What every fault test checks at its end: the state file is valid and no work was lost.

"Nothing lost" is checked with git itself: every commit that existed before the run still
exists, every ref that existed still points where it pointed, and the user's checkout (HEAD,
index, working tree) is as it was, apart from the team state file the run exists to write. A
run may add refs (its feature and task branches); it may never move or delete one it did not
create.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent_team.state import STATE_RELATIVE_PATH, TeamState, validate_state

STATE_STATUS_LINE = f"?? {Path(STATE_RELATIVE_PATH).as_posix()}"


def git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@dataclass(frozen=True)
class GitSnapshot:
    """Refs, reachable commits and the user's checkout at one moment."""

    refs: dict[str, str]
    commits: frozenset[str]
    head: str
    symbolic_head: str
    status: str


def git_snapshot(repo: Path) -> GitSnapshot:
    refs = dict(
        line.split(" ", 1)[::-1]
        for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
    )
    return GitSnapshot(
        refs=refs,
        commits=frozenset(git(repo, "rev-list", "--all").split()),
        head=git(repo, "rev-parse", "HEAD").strip(),
        symbolic_head=git(repo, "symbolic-ref", "-q", "HEAD", check=False).strip(),
        status="".join(line for line in git(repo, "status", "--porcelain",
                                            "--untracked-files=all").splitlines(keepends=True)
                       if line.rstrip("\n") != STATE_STATUS_LINE),
    )


def assert_nothing_lost(repo: Path, before: GitSnapshot) -> GitSnapshot:
    """Fail unless every commit and ref of `before` survived and the checkout is untouched."""
    after = git_snapshot(repo)
    missing = [sha for sha in before.commits
               if subprocess.run(["git", "-C", str(repo), "cat-file", "-e", f"{sha}^{{commit}}"],
                                 capture_output=True, check=False).returncode != 0]
    assert not missing, f"commits lost: {missing}"
    moved = {ref: (sha, after.refs.get(ref)) for ref, sha in before.refs.items()
             if after.refs.get(ref) != sha}
    assert not moved, f"refs moved or deleted by the run: {moved}"
    assert (after.head, after.symbolic_head) == (before.head, before.symbolic_head)
    assert after.status == before.status, f"the user's checkout changed:\n{after.status}"
    return after


def new_branches(before: GitSnapshot, after: GitSnapshot) -> list[str]:
    return sorted(ref.removeprefix("refs/heads/") for ref in after.refs
                  if ref.startswith("refs/heads/") and ref not in before.refs)


def read_valid_state(repo: Path) -> dict[str, Any]:
    """The state file, read by TeamState and validated against the schema once more."""
    path = repo / STATE_RELATIVE_PATH
    state = TeamState(path).read()
    validate_state(json.loads(path.read_text(encoding="utf-8")), path)
    return state


def tasks_by_id(state: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {task["task_id"]: task for task in state["tasks"]}


def file_at(repo: Path, ref: str, path: str) -> str | None:
    done = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{path}"],
                          capture_output=True, text=True, check=False)
    return done.stdout if done.returncode == 0 else None


def write_config(path: Path, **sections: Any) -> Path:
    """An orchestrator-config.json with tiny retry delays, plus the given sections."""
    data: dict[str, Any] = {"retry": {"base_delay_seconds": 0.001, "max_delay_seconds": 0.01,
                                      "retry_after_ceiling_seconds": 0.05}}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def contains_any(text: str, needles: Iterable[str]) -> list[str]:
    return [needle for needle in needles if needle in text]
