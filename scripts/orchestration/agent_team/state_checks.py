"""Checks a recorded feature must pass before a run acts on it, and the branches a run owns.

The JSON Schema says what each field may hold; it cannot say that ids are unique, that every
dependency names a task, that the tasks form no cycle, or that the branches the state names are
the run's own. A state file edited by hand (or by an unconfined agent) can be schema-valid and
still turn a resume against the user: a cycle hangs the scheduler, a dangling id raises a
`KeyError`, and a feature branch named `main` would have agents' work merged into the user's
branch. `check_consistency` finds all of these before git is touched, and `--resume` refuses
with exit 2 and every reason.

Which branches a run may move is recorded in the state as it goes: `current_feature.branches`
gets the feature branch when the run begins and each task branch just *before* git creates it,
so a kill between the two leaves a claim without a branch (harmless), never a branch of the
run's that the run would not recognise. A branch the state names that exists in git but was
never claimed is the user's, and is never touched.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import StateError
from .run_context import RunContext
from .scheduler import find_cycle
from .task_record import TaskRecord, tasks_of

if TYPE_CHECKING:
    from .git_workspace import GitWorkspace

__all__ = [
    "AGENTS_INFIX",
    "GitWorkspace",
    "check_consistency",
    "claim_branch",
    "owned_branches",
    "raise_if_inconsistent",
    "task_branch_of",
]

#: Task branches are `<feature branch>-agents/<role>/<task>` (git cannot nest refs under the
#: feature branch itself); every branch a run may create lies in that namespace.
AGENTS_INFIX = "-agents/"


def task_branch_of(feature_branch: str, task: TaskRecord) -> str:
    """`feature/<slug>-agents/<role>/<task>`: the branch a run gives a task that records none
    (git cannot nest refs under `feature/<slug>` itself)."""
    return f"{feature_branch}{AGENTS_INFIX}{task['assigned_to']}/{task['task_id']}"


def owned_branches(feature: Mapping[str, Any]) -> list[str] | None:
    """The branches the run recorded as created by itself; None for a state written before
    the record existed (then only the namespace rules apply)."""
    branches = feature.get("branches")
    return None if branches is None else [str(b) for b in branches]


def in_namespace(feature_branch: str, branch: str) -> bool:
    """Whether `branch` is the feature branch or one of its task branches."""
    return branch == feature_branch or (
        branch.startswith(feature_branch + AGENTS_INFIX)
        and len(branch) > len(feature_branch + AGENTS_INFIX)
    )


def valid_branch_name(name: str) -> bool:
    """git's own rules for a branch name (`check-ref-format`), plus: no leading dash."""
    if not name or name.startswith("-"):
        return False
    done = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"],
                          capture_output=True, check=False,
                          env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return done.returncode == 0


def _task_problems(tasks: Sequence[TaskRecord]) -> list[str]:
    problems: list[str] = []
    ids = [str(t["task_id"]) for t in tasks]
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        problems.append(f"task id(s) recorded more than once: {', '.join(duplicates)}")
    known = set(ids)
    for task in tasks:
        dangling = [d for d in task["dependencies"] if d not in known]
        if dangling:
            problems.append(f"task {task['task_id']} depends on {', '.join(dangling)}, which "
                            "the state does not hold")
    graph: dict[str, list[str]] = {}
    for task in tasks:
        graph.setdefault(str(task["task_id"]), []).extend(task["dependencies"])
    cycle = find_cycle(graph)
    if cycle:
        problems.append(f"the task dependencies form a cycle: {' -> '.join(cycle)}")
    return problems


def _branch_problems(feature: Mapping[str, Any], tasks: Sequence[TaskRecord],
                     integration: Mapping[str, Any]) -> list[str]:
    """Names only: slashes, git's rules, the namespace. No git repository is read."""
    problems: list[str] = []
    branch = str(feature["branch"])
    if "/" not in branch:
        problems.append(f"the feature branch {branch!r} has no slash; a run's feature branch "
                        "is always feature/<name>")
    elif not valid_branch_name(branch):
        problems.append(f"the feature branch {branch!r} is not a valid git branch name")
    if branch == feature.get("base_branch"):
        problems.append(f"the feature branch {branch!r} is the base branch the run started "
                        "from")
    if integration.get("branch") not in (None, branch):
        problems.append(f"integration.branch {integration['branch']!r} is not the feature "
                        f"branch {branch!r}")
    for task in tasks:
        name = task.get("branch")
        if name is None:
            continue
        if not in_namespace(branch, name) or name == branch:
            problems.append(f"task {task['task_id']}'s branch {name!r} lies outside the "
                            f"feature's namespace {branch}{AGENTS_INFIX}...")
        elif not valid_branch_name(name):
            problems.append(f"task {task['task_id']}'s branch {name!r} is not a valid git "
                            "branch name")
    for name in owned_branches(feature) or []:
        if not in_namespace(branch, name):
            problems.append(f"current_feature.branches names {name!r}, which is neither the "
                            "feature branch nor one of its task branches")
    return problems


def _repository_problems(feature: Mapping[str, Any], run_branches: Iterable[str],
                         git: GitWorkspace, worktree_root: Path | None) -> list[str]:
    """Branches the state names that are the user's, and a base commit git does not have."""
    problems: list[str] = []
    owned = owned_branches(feature)
    base = feature.get("base_branch")
    names = sorted(set(run_branches))
    for name in names:
        if name == base:
            problems.append(f"the run would move {name!r}, the branch the run started from")
        elif owned is not None and name not in owned and git.branch_exists(name):
            problems.append(f"branch {name!r} exists but this run did not create it (it is "
                            "not in current_feature.branches): it is left alone")
    root = worktree_root.resolve() if worktree_root is not None else None
    for info in git.worktrees.entries():
        if info.branch not in names:
            continue
        path = Path(info.path).resolve()
        if root is None or (path != root and root not in path.parents):
            problems.append(f"branch {info.branch!r} is checked out in {path}, which is not one "
                            "of the run's worktrees")
    base_commit = feature.get("base_commit")
    if base_commit and git.resolve(str(base_commit)) is None:
        problems.append(f"the base commit {base_commit} is not in this repository")
    return problems


def check_consistency(state: Mapping[str, Any], git: GitWorkspace | None = None, *,
                      worktree_root: Path | None = None,
                      branch_of: Any = None) -> list[str]:
    """Every reason the recorded feature cannot be acted on safely; empty when it can.

    Args:
        state: a schema-valid state (as `TeamState.read()` returns it).
        git: the repository, for the checks against it; None checks the file alone.
        worktree_root: where the run's worktrees live; a run branch checked out anywhere else
            (the user's checkout, a worktree of the user's) is the user's.
        branch_of: how the run names a task's branch when the task records none.
    """
    feature = state.get("current_feature")
    if not feature:
        return []
    tasks = tasks_of(state)
    problems = _task_problems(tasks)
    problems += _branch_problems(feature, tasks, state.get("integration") or {})
    if problems or git is None:  # names that fail the rules are never handed to git
        return problems
    run_branches = [str(feature["branch"])]
    for task in tasks:
        name = task.get("branch") or (branch_of(task) if branch_of is not None else None)
        if name:
            run_branches.append(str(name))
    return _repository_problems(feature, run_branches, git, worktree_root)


def raise_if_inconsistent(path: Path, problems: Sequence[str]) -> None:
    """StateError (exit 2) listing every problem; nothing was changed."""
    if not problems:
        return
    listed = "\n".join(f"  - {p}" for p in problems)
    raise StateError(
        f"The team state file {path} is valid JSON of the right shape, but it cannot be "
        f"resumed safely:\n{listed}\nNothing was changed, in git or in the file. Fix the file "
        "by hand, or move it away and start a new run with --feature."
    )


def claim_branch(run: RunContext, branch: str, *, exists: bool) -> None:
    """Record `branch` as the run's before git creates it; refuse a branch that is not ours.

    One journaled change, so claiming costs the same at any plan size.

    Raises:
        StateError: `branch` exists already and the run never created it (the user's).
    """
    owned = run.store.view(lambda state: (state.get("current_feature") or {}).get("branches"))
    if owned is None or branch in owned:
        return
    run.store.record({"op": "branch", "name": branch, "exists": exists})
