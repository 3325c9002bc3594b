"""Making a fresh worktree behave like the user's checkout before an agent works in it.

`git worktree add` gives tracked files only: submodules are empty, gitignored files the
project needs (`.env`, a generated `_version.py`, husky's `.husky/_`) are missing, and
`node_modules` / `.venv` are found only while worktrees sit inside the repository. This module
initialises submodules from the user's own submodule repositories (never the network), copies
named untracked files, runs `coordination.worktree_setup` commands, links dependency
directories the commands did not create, and reports every step.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .process import interpreter_argv, run_process
from .testrun import Runner

__all__ = [
    "SetupReport", "SetupSettings", "detected_copies", "init_submodules", "prepare_worktree",
    "release_submodules", "unsaved_submodule_files",
]

#: Dependency directories reused from the checkout when the worktree has none of its own.
DEPENDENCY_DIRS = ("node_modules", ".venv", "venv")
_SCM_VERSION_FILE = re.compile(
    r"^\s*(?:version_file|write_to|version-file)\s*=\s*[\"']([^\"']+)[\"']", re.MULTILINE
)


@dataclass(frozen=True)
class SetupSettings:
    """`coordination.worktree_setup` (commands) and `coordination.worktree_copy` (paths)."""

    commands: tuple[str, ...] = ()
    copy: tuple[str, ...] = ()
    timeout: float = 900
    link_dependencies: bool = True


@dataclass
class SetupReport:
    """What was done to one worktree; `problems` say what could not be, and why."""

    worktree: Path
    submodules: list[str] = field(default_factory=list)
    copied: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """One line per step, for the run log."""
        out = [f"submodule {s}" for s in self.submodules]
        out += [f"copied {c}" for c in self.copied]
        out += [f"linked {item}" for item in self.linked]
        out += [f"hooks: {h}" for h in self.hooks]
        out += [f"ran `{c}`" for c in self.commands]
        return out + [f"problem: {p}" for p in self.problems]


def _git(cwd: Path, *args: str, env: Mapping[str, str] | None = None,
         check: bool = True) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False, timeout=600)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, ["git", *args], done.stdout,
                                            done.stderr)
    return done.stdout


def _common_dir(repo: Path) -> Path:
    return (repo / _git(repo, "rev-parse", "--git-common-dir").strip()).resolve()


def _submodules(repo: Path) -> list[tuple[str, str]]:
    """(name, path) of each submodule declared in `repo`'s .gitmodules."""
    if not (repo / ".gitmodules").is_file():
        return []
    output = _git(repo, "config", "-f", ".gitmodules", "--get-regexp",
                  r"^submodule\..*\.path$", check=False)
    found = []
    for line in output.splitlines():
        key, _, path = line.partition(" ")
        found.append((key[len("submodule."):-len(".path")], path.strip()))
    return found


def init_submodules(worktree: Path, modules: Path, *, prefix: str = "") -> tuple[list[str],
                                                                                 list[str]]:
    """Check out `worktree`'s submodules from the local repositories under `modules`.

    `modules` is the user's `<git dir>/modules`: each submodule cloned there by the user's
    own `git submodule update`. The configured URL is rewritten to that directory for this
    command only and every protocol but `file` is refused, so nothing is fetched from the
    network. Nested submodules are initialised the same way. Returns (done, problems).
    """
    done: list[str] = []
    problems: list[str] = []
    for name, path in _submodules(worktree):
        local = modules / name
        shown = f"{prefix}{path}"
        if not (local / "HEAD").is_file():
            problems.append(f"submodule {shown} is not initialised in your checkout, so it is "
                            "empty in the worktree (run `git submodule update --init` there)")
            continue
        url = (_git(worktree, "config", "--get", f"submodule.{name}.url", check=False).strip()
               or _git(worktree, "config", "-f", ".gitmodules", "--get",
                       f"submodule.{name}.url", check=False).strip())
        try:
            _git(worktree, "-c", "protocol.file.allow=always",
                 "-c", f"url.{local}.insteadOf={url}", "submodule", "update", "--init",
                 "--", path, env={"GIT_ALLOW_PROTOCOL": "file", "GIT_TERMINAL_PROMPT": "0"})
        except subprocess.CalledProcessError as exc:
            problems.append(f"submodule {shown} could not be checked out from {local}: "
                            f"{(exc.stderr or '').strip()[-300:]}")
            continue
        done.append(f"{shown} (from {local})")
        nested_done, nested_problems = init_submodules(worktree / path, local / "modules",
                                                       prefix=f"{shown}/")
        done += nested_done
        problems += nested_problems
    return done, problems


def unsaved_submodule_files(worktree: Path) -> list[str]:
    """Files changed inside submodule paths, which a commit of the worktree does not hold.

    An agent's edits there belong to the submodule's repository; the task must report them
    rather than say done while they are dropped.
    """
    found: list[str] = []
    for _, path in _submodules(worktree):
        directory = worktree / path
        if (directory / ".git").exists():
            output = _git(directory, "status", "--porcelain", "--untracked-files=all",
                          check=False)
            found += [f"{path}/{line[3:]}" for line in output.splitlines() if line.strip()]
        elif directory.is_dir():
            found += sorted(str(p.relative_to(worktree)) for p in directory.rglob("*")
                            if p.is_file())
    return found


def release_submodules(worktree: Path) -> None:
    """Deinitialise a worktree's submodules so `git worktree remove` accepts it.

    git refuses to remove a worktree that holds submodules; call `unsaved_submodule_files`
    first, since this discards what is in them.
    """
    if not _submodules(worktree):
        return
    _git(worktree, "submodule", "deinit", "--all", "--force", check=False)
    git_dir = (worktree / _git(worktree, "rev-parse", "--git-dir").strip()).resolve()
    if git_dir != _common_dir(worktree):
        shutil.rmtree(git_dir / "modules", ignore_errors=True)


def detected_copies(checkout: Path) -> list[str]:
    """Generated files the project's build writes and ignores: setuptools-scm / hatch-vcs."""
    try:
        text = (checkout / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    return sorted({m for m in _SCM_VERSION_FILE.findall(text) if (checkout / m).is_file()})


def _safe_relative(name: str) -> bool:
    path = Path(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def _copy(checkout: Path, worktree: Path, patterns: Sequence[str],
          report: SetupReport) -> None:
    for pattern in patterns:
        if not _safe_relative(pattern):
            report.problems.append(f"worktree_copy entry {pattern!r} is not a path inside the "
                                   "repository; skipped")
            continue
        sources = sorted(checkout.glob(pattern)) if any(c in pattern for c in "*?[") \
            else [checkout / pattern]
        for source in sources:
            relative = source.relative_to(checkout)
            target = worktree / relative
            if not source.exists() or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, symlinks=True)
            else:
                shutil.copy2(source, target)
            report.copied.append(str(relative))


def _ignore(worktree: Path, name: str) -> None:
    """Make sure git ignores `name` at the worktree root (a symlink escapes `node_modules/`)."""
    if subprocess.run(["git", "check-ignore", "-q", "--no-index", name], cwd=worktree,
                      check=False).returncode == 0:
        return
    exclude = _common_dir(worktree) / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    text = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    if f"/{name}" not in text.splitlines():
        prefix = "" if not text or text.endswith("\n") else "\n"
        exclude.write_text(f"{text}{prefix}/{name}\n", encoding="utf-8")


def _link_dependencies(checkout: Path, worktree: Path, report: SetupReport) -> None:
    for name in DEPENDENCY_DIRS:
        source, target = checkout / name, worktree / name
        if not source.is_dir() or target.exists() or target.is_symlink():
            continue
        target.symlink_to(source.resolve(), target_is_directory=True)
        _ignore(worktree, name)
        report.linked.append(f"{name} -> {source.resolve()} (shared with your checkout)")


def _hooks(checkout: Path, worktree: Path, report: SetupReport) -> None:
    """Hooks under a relative `core.hooksPath` that git does not track (husky's `.husky/_`)."""
    configured = _git(checkout, "config", "--get", "core.hooksPath", check=False).strip()
    if not configured:
        report.hooks.append("the repository's own hooks directory (shared by every worktree)")
        return
    if Path(configured).is_absolute() or configured.startswith("~"):
        report.hooks.append(f"core.hooksPath {configured} (the same for every worktree)")
        return
    source, target = checkout / configured, worktree / configured
    if target.is_dir():
        report.hooks.append(f"core.hooksPath {configured} (tracked, present in the worktree)")
    elif source.is_dir():
        shutil.copytree(source, target, symlinks=True)
        _ignore(worktree, configured.rstrip("/"))
        report.hooks.append(f"core.hooksPath {configured} copied from your checkout")
    else:
        report.problems.append(f"core.hooksPath {configured} does not exist in your checkout; "
                               "hooks will not run on agents' commits")


def _run_commands(worktree: Path, settings: SetupSettings, env: Mapping[str, str] | None,
                  runner: Runner, report: SetupReport) -> None:
    for command in settings.commands:
        try:
            argv = interpreter_argv(shlex.split(command))
            outcome = runner(argv, cwd=worktree, timeout=settings.timeout, env=env)
        except (OSError, ValueError) as exc:
            report.problems.append(f"worktree_setup `{command}` could not start: {exc}")
            continue
        if outcome.timed_out or outcome.exit_code != 0:
            why = "timed out" if outcome.timed_out else f"exit code {outcome.exit_code}"
            report.problems.append(f"worktree_setup `{command}` failed ({why}): "
                                   f"{outcome.output.strip()[-500:]}")
        else:
            report.commands.append(command)


def prepare_worktree(
    checkout: Path,
    worktree: Path,
    settings: SetupSettings = SetupSettings(),
    *,
    env: Mapping[str, str] | None = None,
    runner: Runner = run_process,
) -> SetupReport:
    """Call right after `git worktree add`, before the agent starts.

    Submodules, then copies (configured and detected), then hooks, then the setup commands,
    then links for dependency directories the commands did not create. Never raises for a
    step that fails: the report says what is missing.
    """
    checkout, worktree = checkout.resolve(), worktree.resolve()
    report = SetupReport(worktree)
    done, problems = init_submodules(worktree, _common_dir(checkout) / "modules")
    report.submodules += done
    report.problems += problems
    _copy(checkout, worktree, [*settings.copy, *detected_copies(checkout)], report)
    _hooks(checkout, worktree, report)
    _run_commands(worktree, settings, env, runner, report)
    if settings.link_dependencies:
        _link_dependencies(checkout, worktree, report)
    return report
