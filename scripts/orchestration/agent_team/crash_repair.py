"""What a killed run leaves in git, and putting it right before a resume acts.

A SIGKILL inside `git worktree add` leaves a worktree git itself will not reuse or prune: its
administrative directory is locked ("initializing"), holds an `index.lock` and no index, and
the directory has a `.git` file and part of the checkout. Every later `git worktree add` of
that branch or path then fails. A kill inside `git branch` or `update-ref` leaves
`refs/heads/<branch>.lock`, and every later write of that branch fails.

`repair_after_crash` runs under the run lock, so no git process of the orchestrator's can be
using any of this. It only looks at worktrees under the run's own feature directory and at
the run's branch namespace; the user's checkout, worktrees and branches are never touched. A
half-made worktree holds nothing but git's partial checkout (agents start only after the
worktree exists), so removing it loses nothing; one whose checkout finished is left to the
usual recovery, which commits what an agent wrote there.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from .state_checks import AGENTS_INFIX

__all__ = ["half_made_worktrees", "repair_after_crash", "stale_ref_locks"]


def _admin_dirs(common_dir: Path) -> list[Path]:
    root = common_dir / "worktrees"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def _worktree_of(admin: Path) -> Path | None:
    """The working directory an administrative directory belongs to (from its `gitdir`)."""
    try:
        text = (admin / "gitdir").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    marker = Path(text)
    if not marker.is_absolute():
        marker = admin / marker
    return marker.parent.resolve()


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def half_made_worktrees(common_dir: Path, feature_dir: Path) -> list[tuple[Path, Path]]:
    """(admin dir, worktree dir) of the run's worktrees whose `git worktree add` never
    finished: no index was ever written, or the directory is gone."""
    root = feature_dir.resolve()
    found = []
    for admin in _admin_dirs(common_dir):
        worktree = _worktree_of(admin)
        if worktree is None or not _under(worktree, root):
            continue
        if not (admin / "index").exists() or not (worktree / ".git").exists():
            found.append((admin, worktree))
    return found


def _points_at(worktree: Path, admin: Path) -> bool:
    try:
        text = (worktree / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    target = Path(text.removeprefix("gitdir:").strip())
    if not target.is_absolute():
        target = worktree / target
    return target.resolve() == admin.resolve()


def stale_ref_locks(common_dir: Path, feature_branch: str) -> list[Path]:
    """`.lock` files a killed git left on the run's branches: the feature branch and every
    branch under `<feature branch>-agents/` (a namespace only the run creates branches in)."""
    heads = common_dir / "refs" / "heads"
    candidates = [heads / f"{feature_branch}.lock"]
    namespace = heads / f"{feature_branch}{AGENTS_INFIX}"
    if namespace.is_dir():
        candidates += sorted(namespace.rglob("*.lock"))
    return [p for p in candidates if p.is_file() and not p.is_symlink()]


def repair_after_crash(common_dir: Path, feature_dir: Path, feature_branch: str) -> list[str]:
    """Undo half-made worktrees and stale branch locks of the run; returns what was done.

    The caller holds the run lock and prunes worktrees afterwards (`git worktree prune` drops
    the administrative directories whose checkout is gone).
    """
    done: list[str] = []
    for admin, worktree in half_made_worktrees(common_dir, feature_dir):
        for name in ("locked", "index.lock"):
            with contextlib.suppress(FileNotFoundError):
                (admin / name).unlink()
        if worktree.is_dir() and not worktree.is_symlink() and _points_at(worktree, admin):
            shutil.rmtree(worktree)
            done.append(f"Removed {worktree}: an interrupted `git worktree add` left it "
                        "half checked out (no agent had worked there yet).")
        else:
            done.append(f"Unlocked the record of {worktree}: an interrupted `git worktree "
                        "add` left it locked with no checkout.")
    for lock in stale_ref_locks(common_dir, feature_branch):
        lock.unlink()
        done.append(f"Removed {lock}, left by a git command of the interrupted run.")
    return done
