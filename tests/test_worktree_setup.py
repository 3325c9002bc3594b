"""Worktrees that behave like the checkout: real repositories, submodules, hooks, node, venvs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_team.testrun import run_tests
from agent_team.worktree_setup import (
    SetupSettings,
    prepare_worktree,
    release_submodules,
    unsaved_submodule_files,
)

ENV = {"GIT_AUTHOR_NAME": "T", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "T",
       "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=check,
                          env={**os.environ, **ENV})


def repo_with(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "start")
    return path


def add_worktree(repo: Path, target: Path, branch: str) -> Path:
    git(repo, "worktree", "add", "-q", "-b", branch, str(target))
    return target


# -- submodules -----------------------------------------------------------------------------


@pytest.fixture
def repo_with_submodule(tmp_path: Path) -> Path:
    """A repository whose submodule holds test data; its URL points at an unreachable host."""
    data = repo_with(tmp_path / "data-origin", {"cases.txt": "1\n2\n3\n"})
    repo = repo_with(tmp_path / "repo", {"count.py": "print(len(open('data/cases.txt')"
                                                     ".read().split()))\n"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(data), "data")
    git(repo, "commit", "-qm", "data")
    remote = "https://example.invalid/data.git"
    git(repo, "config", "-f", ".gitmodules", "submodule.data.url", remote)
    git(repo, "config", "submodule.data.url", remote)
    git(repo, "commit", "-qam", "remote url")
    shutil.rmtree(data)  # only the user's own clone of it remains
    return repo


def test_submodule_is_checked_out_from_the_local_clone(repo_with_submodule: Path,
                                                      tmp_path: Path) -> None:
    worktree = add_worktree(repo_with_submodule, tmp_path / "wt", "task")
    assert not (worktree / "data" / "cases.txt").exists(), "git worktree add leaves it empty"
    report = prepare_worktree(repo_with_submodule, worktree, SetupSettings(link_dependencies=False))
    assert report.ok, report.problems
    assert report.submodules and report.submodules[0].startswith("data")
    assert (worktree / "data" / "cases.txt").read_text() == "1\n2\n3\n"
    done = subprocess.run([sys.executable, "count.py"], cwd=worktree, capture_output=True,
                          text=True, check=True)
    assert done.stdout.strip() == "3"


def test_files_written_in_a_submodule_are_reported_and_removal_works(
        repo_with_submodule: Path, tmp_path: Path) -> None:
    worktree = add_worktree(repo_with_submodule, tmp_path / "wt", "task")
    prepare_worktree(repo_with_submodule, worktree, SetupSettings(link_dependencies=False))
    assert unsaved_submodule_files(worktree) == []
    (worktree / "data" / "new-case.txt").write_text("4\n", encoding="utf-8")
    (worktree / "data" / "cases.txt").write_text("changed\n", encoding="utf-8")
    assert sorted(unsaved_submodule_files(worktree)) == ["data/cases.txt", "data/new-case.txt"]
    assert git(repo_with_submodule, "worktree", "remove", str(worktree),
               check=False).returncode != 0, "git refuses worktrees holding submodules"
    release_submodules(worktree)
    git(repo_with_submodule, "worktree", "remove", "--force", str(worktree))
    assert not worktree.exists()


def test_submodule_not_initialised_in_the_checkout_is_a_problem(tmp_path: Path) -> None:
    data = repo_with(tmp_path / "data-origin", {"a.txt": "a"})
    repo = repo_with(tmp_path / "repo", {"x": "x"})
    git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(data), "data")
    git(repo, "commit", "-qm", "data")
    git(repo, "submodule", "deinit", "-q", "--all", "--force")
    shutil.rmtree(repo / ".git" / "modules")
    worktree = add_worktree(repo, tmp_path / "wt", "task")
    report = prepare_worktree(repo, worktree, SetupSettings(link_dependencies=False))
    assert not report.ok
    assert "not initialised in your checkout" in report.problems[0]
    (worktree / "data" / "agent.txt").write_text("x", encoding="utf-8")
    assert unsaved_submodule_files(worktree) == ["data/agent.txt"]


# -- copies, setup commands ----------------------------------------------------------------


def test_copies_named_and_generated_untracked_files(tmp_path: Path) -> None:
    repo = repo_with(tmp_path / "repo", {
        ".gitignore": ".env\nsrc/pkg/_version.py\n",
        "pyproject.toml": '[tool.setuptools_scm]\nversion_file = "src/pkg/_version.py"\n',
        "src/pkg/__init__.py": "",
    })
    (repo / ".env").write_text("DEBUG=1\n", encoding="utf-8")
    (repo / "src/pkg/_version.py").write_text("version = '1.2.3'\n", encoding="utf-8")
    worktree = add_worktree(repo, tmp_path / "wt", "task")
    settings = SetupSettings(copy=(".env", "../outside", "missing.txt"), link_dependencies=False)
    report = prepare_worktree(repo, worktree, settings)
    assert sorted(report.copied) == [".env", "src/pkg/_version.py"]
    assert (worktree / ".env").read_text() == "DEBUG=1\n"
    assert (worktree / "src/pkg/_version.py").read_text() == "version = '1.2.3'\n"
    assert any("../outside" in p for p in report.problems)
    assert git(worktree, "status", "--porcelain").stdout == ""


def test_setup_commands_run_in_the_worktree_and_failures_are_reported(tmp_path: Path) -> None:
    repo = repo_with(tmp_path / "repo", {".gitignore": "built.txt\n"})
    worktree = add_worktree(repo, tmp_path / "wt", "task")
    settings = SetupSettings(commands=(
        "python -c \"open('built.txt', 'w').write('ok')\"",
        "python -c \"import sys; print('no network'); sys.exit(4)\"",
    ), link_dependencies=False)
    report = prepare_worktree(repo, worktree, settings)
    assert (worktree / "built.txt").read_text() == "ok"
    assert len(report.commands) == 1
    assert len(report.problems) == 1 and "exit code 4" in report.problems[0]
    assert "no network" in report.problems[0]


# -- hooks ----------------------------------------------------------------------------------


def test_husky_hooks_run_on_commits_in_the_worktree(tmp_path: Path) -> None:
    """husky: core.hooksPath=.husky/_ (generated, gitignored) calls the tracked .husky/ hook."""
    repo = repo_with(tmp_path / "repo", {
        ".husky/pre-commit": "if git diff --cached | grep -q FORBIDDEN; then\n"
                             "  echo 'lint: FORBIDDEN found' >&2; exit 1\nfi\n",
        "app.txt": "hello\n",
    })
    hooks = repo / ".husky" / "_"
    hooks.mkdir()
    (hooks / ".gitignore").write_text("*\n", encoding="utf-8")
    (hooks / "pre-commit").write_text('#!/bin/sh\nexec sh "$(dirname "$0")/../pre-commit"\n',
                                      encoding="utf-8")
    (hooks / "pre-commit").chmod(0o755)
    git(repo, "config", "core.hooksPath", ".husky/_")
    # the hook works in the checkout
    (repo / "app.txt").write_text("FORBIDDEN\n", encoding="utf-8")
    assert git(repo, "commit", "-qam", "x", check=False).returncode != 0
    git(repo, "checkout", "--", "app.txt")

    bare = add_worktree(repo, tmp_path / "plain-wt", "plain")
    (bare / "app.txt").write_text("FORBIDDEN\n", encoding="utf-8")
    assert git(bare, "commit", "-qam", "x", check=False).returncode == 0, \
        "without setup, the generated hooks directory is missing and no hook runs"

    worktree = add_worktree(repo, tmp_path / "wt", "task")
    report = prepare_worktree(repo, worktree, SetupSettings(link_dependencies=False))
    assert any(".husky/_ copied" in line for line in report.hooks)
    (worktree / "app.txt").write_text("FORBIDDEN\n", encoding="utf-8")
    refused = git(worktree, "commit", "-qam", "x", check=False)
    assert refused.returncode != 0 and "FORBIDDEN found" in refused.stderr
    (worktree / "app.txt").write_text("fine\n", encoding="utf-8")
    git(worktree, "commit", "-qam", "fine")
    assert git(worktree, "show", "--name-only", "--format=", "HEAD").stdout.split() == ["app.txt"]


# -- node project with the worktree root outside the repository ----------------------------


NODE_TEST = """\
const test = require('node:test');
const assert = require('node:assert');
const greet = require('greet');
test('greets', () => assert.strictEqual(greet('x'), 'hi x'));
test('greets loudly', () => assert.strictEqual(greet('X').toUpperCase(), 'HI X'));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_modules_found_with_worktree_root_outside_the_repository(tmp_path: Path) -> None:
    repo = repo_with(tmp_path / "repo", {
        ".gitignore": "node_modules/\n",
        "package.json": '{"name": "app", "private": true, "scripts": {"test": "node --test"}}\n',
        "test/greet.test.js": NODE_TEST,
    })
    module = repo / "node_modules" / "greet"
    module.mkdir(parents=True)
    (module / "index.js").write_text("module.exports = (n) => 'hi ' + n;\n", encoding="utf-8")
    root = tmp_path / "elsewhere"  # coordination.worktree_root outside the repository
    plain = add_worktree(repo, root / "plain", "plain")
    failing = run_tests("npm test", plain, timeout=120)
    assert not failing.success and "Cannot find module 'greet'" in failing.output_tail

    worktree = add_worktree(repo, root / "task", "task")
    report = prepare_worktree(repo, worktree)
    assert report.linked and report.linked[0].startswith("node_modules ->")
    results = run_tests("npm test", worktree, timeout=120)
    assert results.success, results.output_tail
    assert (results.passed, results.failed, results.source) == (2, 0, "junit")
    git(worktree, "add", "-A")
    assert git(worktree, "status", "--porcelain").stdout == "", "the link is never committed"
