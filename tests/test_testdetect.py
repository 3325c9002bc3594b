"""Detection follows the project; verdicts and counts from real runs of what was detected."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from agent_team.process import command_environment
from agent_team.testdetect import NPM_PLACEHOLDER, detect_tests
from agent_team.testrun import run_tests

from tests.test_worktree_setup import add_worktree, git, repo_with


def fast_env() -> dict[str, str]:
    """The child pytest loads no third-party plugins, so it starts fast and behaves the same."""
    return {**command_environment(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


UNITTEST_ONLY = """\
import unittest


def load_tests(loader, tests, pattern):
    suite = unittest.TestSuite()
    suite.addTest(Numbers("check_addition"))
    suite.addTest(Numbers("check_subtraction"))
    return suite


class Numbers(unittest.TestCase):
    def check_addition(self):
        self.assertEqual(1 + 1, 2)

    def check_subtraction(self):
        self.assertEqual(2 - 1, 1)

    def test_needs_setup_from_load_tests(self):
        self.fail("only load_tests decides what runs")
"""


def test_unittest_only_project_runs_under_unittest(tmp_path: Path) -> None:
    """A load_tests suite: pytest ignores the protocol and runs a test meant never to run."""
    write(tmp_path, {"tests/__init__.py": "", "tests/test_numbers.py": UNITTEST_ONLY,
                     "setup.py": "from setuptools import setup\nsetup()\n"})
    found = detect_tests(tmp_path)
    assert found is not None and found.runner == "unittest", found
    assert "unittest.TestCase" in found.reason
    results = run_tests(found.command, tmp_path, timeout=60)
    assert results.success, results.output_tail
    assert (results.passed, results.failed, results.source) == (2, 0, "console")
    under_pytest = run_tests("python -m pytest -q -p no:cacheprovider", tmp_path, timeout=60,
                             env=fast_env())
    assert not under_pytest.success, "the suite fails under pytest, as the detection expects"


def test_npm_placeholder_does_not_hide_a_python_suite(tmp_path: Path) -> None:
    write(tmp_path, {"package.json": json.dumps({"scripts": {"test": NPM_PLACEHOLDER}}),
                     "tests/test_a.py": "def test_a():\n    assert True\n"})
    found = detect_tests(tmp_path)
    assert found is not None and found.runner == "pytest" and "pytest-style" in found.reason


@pytest.mark.parametrize(("files", "runner", "command"), [
    ({"Makefile": "lint:\n\truff .\ntest:\n\tpytest\n"}, "make", "make test"),
    ({"package.json": '{"scripts": {"test": "vitest run"}}', "pnpm-lock.yaml": ""},
     "pnpm", "pnpm test"),
    ({"package.json": '{"scripts": {"test": "jest"}}', "yarn.lock": ""}, "yarn", "yarn test"),
    ({"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, "pytest", None),
    ({"setup.cfg": "[tool:pytest]\ntestpaths = tests\n"}, "pytest", None),
    ({"go.mod": "module x\n"}, "go", "go test ./..."),
    ({"Cargo.toml": "[package]\nname='x'\n"}, "cargo", "cargo test"),
    ({"package.json": '{"devDependencies": {"vitest": "1"}}'}, "vitest", "npx vitest run"),
])
def test_declared_and_default_commands(tmp_path: Path, files: dict[str, str], runner: str,
                                       command: str | None) -> None:
    write(tmp_path, files)
    found = detect_tests(tmp_path)
    assert found is not None and found.runner == runner
    assert found.reason
    if command is not None:
        assert found.command == command


def test_declared_command_comes_before_test_files(tmp_path: Path) -> None:
    write(tmp_path, {"Makefile": "test:\n\tpython -m unittest\n",
                     "tests/test_a.py": "def test_a():\n    pass\n"})
    assert detect_tests(tmp_path).command == "make test"  # type: ignore[union-attr]


def test_nothing_to_detect(tmp_path: Path) -> None:
    assert detect_tests(tmp_path) is None
    write(tmp_path, {"package.json": json.dumps({"scripts": {"test": NPM_PLACEHOLDER}})})
    assert detect_tests(tmp_path) is None


CRATE_LIB = """\
pub fn double(x: i32) -> i32 { x * 2 }

#[cfg(test)]
mod tests {
    #[test] fn one() { assert_eq!(super::double(1), 2); }
    #[test] fn two() { assert_eq!(super::double(2), 4); }
    #[test] fn wrong() { assert_eq!(super::double(2), 5); }
    #[test] #[ignore] fn later() {}
}
"""


@pytest.mark.skipif(shutil.which("cargo") is None, reason="cargo is not installed")
def test_cargo_crate_counts(tmp_path: Path) -> None:
    write(tmp_path, {"Cargo.toml": '[package]\nname = "dbl"\nversion = "0.1.0"\n'
                                   'edition = "2021"\n\n[dependencies]\n',
                     "src/lib.rs": CRATE_LIB})
    found = detect_tests(tmp_path)
    assert found is not None and found.command == "cargo test"
    results = run_tests("cargo test --offline", tmp_path, timeout=300)
    assert results.verdict == "failed"
    assert (results.passed, results.failed, results.skipped) == (2, 1, 1)
    assert results.source == "console" and results.framework == "cargo"


# -- editable installs ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def editable_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A src-layout package installed with `pip install -e .` into a venv made here."""
    base = tmp_path_factory.mktemp("editable")
    repo = repo_with(base / "repo", {
        ".gitignore": "*.egg-info/\nbuild/\n",
        "pyproject.toml": '[build-system]\nrequires = ["setuptools>=64"]\n'
                          'build-backend = "setuptools.build_meta"\n\n'
                          '[project]\nname = "calc"\nversion = "0.1"\n\n'
                          '[tool.setuptools.packages.find]\nwhere = ["src"]\n',
        "src/calc/__init__.py": "def add(a, b):\n    return a - b  # bug\n",
        "tests/test_calc.py": "from calc import add\n\n\n"
                              "def test_add():\n    assert add(2, 3) == 5\n",
    })
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                           "--no-build-isolation", "-e", str(repo)], capture_output=True,
                          text=True, check=False)
    if "invalid command 'bdist_wheel'" in done.stdout + done.stderr:
        pytest.skip("setuptools < 70 needs the `wheel` package for editable installs")
    assert done.returncode == 0, done.stdout + done.stderr
    return repo, python


def test_editable_install_tests_the_worktree_code(editable_project: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    repo, python = editable_project
    command = f"{python} -m pytest -q -p no:cacheprovider"
    checkout_run = run_tests(command, repo, timeout=120, env=fast_env())
    assert not checkout_run.success, "the checkout has the bug"

    fixed = add_worktree(repo, tmp_path / "fixed", "fix")
    (fixed / "src/calc/__init__.py").write_text("def add(a, b):\n    return a + b\n")
    without = run_tests(command, fixed, timeout=120, env=fast_env())
    assert not without.success, "without redirection the checkout's code is tested"
    results = run_tests(command, fixed, timeout=120, checkout=repo, env=fast_env())
    assert results.success and results.passed == 1, results.output_tail
    assert results.source == "junit"

    broken = add_worktree(repo, tmp_path / "broken", "broken")
    (repo / "src/calc/__init__.py").write_text("def add(a, b):\n    return a + b\n")
    try:
        (broken / "src/calc/__init__.py").write_text("def add(a, b):\n    return a * b\n")
        results = run_tests(command, broken, timeout=120, checkout=repo, env=fast_env())
        assert results.verdict == "failed" and results.failed == 1
    finally:
        git(repo, "checkout", "--", "src/calc/__init__.py")
