"""Which command runs a project's tests: the one the project declares, else its runner's default.

Order: tox / nox (when installed), a Makefile `test` target, package.json's `test` script
(npm's placeholder is not a test command), pytest settings in pyproject.toml / setup.cfg /
pytest.ini / tox.ini; then pytest when the tests are pytest-style, unittest when they are
`unittest.TestCase` only, `go test ./...`, `cargo test`, and a JavaScript runner by lockfile.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: only the section headers are looked at
    tomllib = None  # type: ignore[assignment]

__all__ = ["Detection", "detect_tests"]

NPM_PLACEHOLDER = 'echo "Error: no test specified" && exit 1'
PYTHON = Path(sys.executable).name
_SKIP_DIRS = {".git", "node_modules", ".venv", "venv", ".tox", ".nox", "build", "dist",
              "__pycache__", ".ai-agents", "target"}
_MAKE_TEST = re.compile(r"^test\s*:(?!=)", re.MULTILINE)
_PYTEST_STYLE = re.compile(r"^(?:import pytest|from pytest\b|def test_|async def test_)",
                           re.MULTILINE)


@dataclass(frozen=True)
class Detection:
    """The test command, the runner it starts, and why it was chosen (printed by `check`)."""

    command: str
    runner: str
    reason: str


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if tomllib is None:
        tool: dict[str, Any] = {}
        if re.search(r"^\[tool\.pytest\.ini_options\]", text, re.MULTILINE):
            tool["pytest"] = {"ini_options": {}}
        if re.search(r"^\[tool\.tox\b", text, re.MULTILINE):
            tool["tox"] = {}
        return {"tool": tool}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}


def _read_ini(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    with contextlib.suppress(OSError, configparser.Error, UnicodeDecodeError):
        parser.read_string(path.read_text(encoding="utf-8"))
    return parser


def _package_json(project: Path) -> dict[str, Any]:
    try:
        data = json.loads((project / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _package_manager(project: Path) -> str:
    if (project / "pnpm-lock.yaml").is_file():
        return "pnpm"
    if (project / "yarn.lock").is_file():
        return "yarn"
    return "npm"


def _declared(project: Path) -> Detection | None:
    """The project's own declared test command."""
    pyproject = _read_toml(project / "pyproject.toml")
    tox = (project / "tox.ini").is_file() or "tox" in pyproject.get("tool", {})
    if tox and shutil.which("tox"):
        return Detection("tox", "tox", "tox is configured (tox.ini / [tool.tox]) and installed")
    if (project / "noxfile.py").is_file() and shutil.which("nox"):
        return Detection("nox", "nox", "noxfile.py is present and nox is installed")
    for name in ("GNUmakefile", "makefile", "Makefile"):
        makefile = project / name
        try:
            if makefile.is_file() and _MAKE_TEST.search(makefile.read_text(encoding="utf-8")):
                return Detection("make test", "make", f"{name} has a `test` target")
        except (OSError, UnicodeDecodeError):
            continue
    scripts = _package_json(project).get("scripts")
    script = scripts.get("test") if isinstance(scripts, dict) else None
    if isinstance(script, str) and script.strip() and script.strip() != NPM_PLACEHOLDER:
        manager = _package_manager(project)
        return Detection(f"{manager} test", manager,
                         f"package.json declares a test script ({script.strip()[:60]})")
    settings = _pytest_settings(project, pyproject)
    if settings:
        return Detection(f"{PYTHON} -m pytest -q", "pytest", f"pytest is configured in {settings}")
    return None


def _pytest_settings(project: Path, pyproject: dict[str, Any]) -> str | None:
    if "ini_options" in pyproject.get("tool", {}).get("pytest", {}):
        return "pyproject.toml [tool.pytest.ini_options]"
    if (project / "pytest.ini").is_file():
        return "pytest.ini"
    if _read_ini(project / "setup.cfg").has_section("tool:pytest"):
        return "setup.cfg [tool:pytest]"
    if _read_ini(project / "tox.ini").has_section("pytest"):
        return "tox.ini [pytest]"
    return None


def _python_test_files(project: Path, limit: int = 400) -> list[Path]:
    found: list[Path] = []
    stack = [project]
    while stack and len(found) < limit:
        directory = stack.pop()
        try:
            entries = sorted(directory.iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                if entry.name not in _SKIP_DIRS and not entry.name.startswith("."):
                    stack.append(entry)
            elif entry.suffix == ".py" and (entry.name.startswith("test")
                                            or entry.name.endswith("_test.py")):
                found.append(entry)
    return found


def _unittest_command(project: Path) -> str:
    tests = project / "tests"
    if tests.is_dir() and not (tests / "__init__.py").is_file():
        return f"{PYTHON} -m unittest discover -s tests"
    return f"{PYTHON} -m unittest"


def _python(project: Path) -> Detection | None:
    files = _python_test_files(project)
    conftest = next((p for p in [project / "conftest.py", project / "tests" / "conftest.py"]
                     if p.is_file()), None)
    if conftest is not None:
        relative = conftest.relative_to(project)
        return Detection(f"{PYTHON} -m pytest -q", "pytest", f"{relative} is present")
    pytest_style = []
    unittest_style = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if _PYTEST_STYLE.search(text):
            pytest_style.append(path)
        elif "unittest" in text or "TestCase" in text:
            unittest_style.append(path)
    if pytest_style:
        relative = pytest_style[0].relative_to(project)
        return Detection(f"{PYTHON} -m pytest -q", "pytest",
                         f"{len(pytest_style)} pytest-style test file(s), e.g. {relative}")
    if unittest_style:
        return Detection(_unittest_command(project), "unittest",
                         f"{len(unittest_style)} test file(s), all unittest.TestCase "
                         "(pytest may not run them as unittest does)")
    return None


def _other_languages(project: Path) -> Detection | None:
    if (project / "go.mod").is_file():
        return Detection("go test ./...", "go", "go.mod is present")
    if (project / "Cargo.toml").is_file():
        return Detection("cargo test", "cargo", "Cargo.toml is present")
    package = _package_json(project)
    if not package:
        return None
    dependencies = {**(package.get("dependencies") or {}),
                    **(package.get("devDependencies") or {})}
    manager = _package_manager(project)
    runner_exec = {"npm": "npx", "pnpm": "pnpm exec", "yarn": "yarn"}[manager]
    for runner, args in (("vitest", "vitest run"), ("jest", "jest"), ("mocha", "mocha")):
        if runner in dependencies:
            return Detection(f"{runner_exec} {args}", runner,
                             f"package.json depends on {runner}, no test script")
    return None


def detect_tests(project: Path) -> Detection | None:
    """The test command for `project`, with the reason; None when nothing says how."""
    project = Path(project)
    found = _declared(project) or _python(project) or _other_languages(project)
    if found is not None:
        return found
    markers = ("pyproject.toml", "setup.cfg", "setup.py", "tox.ini")
    if any((project / m).is_file() for m in markers) or (project / "tests").is_dir():
        present = next(m for m in (*markers, "tests") if (project / m).exists())
        return Detection(f"{PYTHON} -m pytest -q", "pytest",
                         f"a Python project ({present}) without test files found yet")
    return None
