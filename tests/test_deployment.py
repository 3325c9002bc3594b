"""The container layout of the usage guide: only scripts/orchestration/ is copied, elsewhere."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script", ["file_based_orchestrator.py", "simple_orchestrator.py",
                                    "co.py"])
def test_scripts_run_from_a_copy_of_the_orchestration_directory(
    script: str, tmp_path: Path
) -> None:
    app = tmp_path / "app" / "orchestration"
    shutil.copytree(ROOT / "scripts" / "orchestration", app,
                    ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run([sys.executable, str(app / script), "--help"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_dockerfile_copies_what_the_entrypoint_needs() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "COPY scripts/orchestration/ /app/orchestration/" in text
    assert '"/app/orchestration/file_based_orchestrator.py"' in text
    assert "apt-get install" in text and " git" in text, "the engine needs git in the image"
    assert "API_KEY" not in text.split("ENTRYPOINT")[0].replace("-e ANTHROPIC_API_KEY", "")


@pytest.mark.slow
def test_pip_install_puts_co_on_the_path(tmp_path: Path) -> None:
    """`pip install -e .` gives the `co` console script; it runs from any directory."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "scripts" / "orchestration", source / "scripts" / "orchestration",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                           "--no-index", "--no-deps", "--no-build-isolation", "-e", str(source)],
                          capture_output=True, text=True, check=False, timeout=300)
    if "invalid command 'bdist_wheel'" in done.stdout + done.stderr:
        pytest.skip("setuptools < 70 needs the `wheel` package for editable installs")
    assert done.returncode == 0, done.stdout + done.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = subprocess.run([str(venv / "bin" / "co"), "--help"], cwd=elsewhere,
                           capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "Usage: co [OPTIONS] COMMAND" in shown.stdout and "checkpoint" in shown.stdout
