"""Quality commands: `co coverage` and `co test-status`."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from ..process import run_process
from ..redaction import redact, safe_environment
from .backlog import open_backlog
from .base import CoContext, errors_as_click, json_option, working_dir_option

COVERAGE_TIMEOUT = 1800.0


def coverage_commands(project: Path) -> list[str]:
    """The commands `co coverage` runs: the JS project's own script, else coverage.py."""
    package = project / "package.json"
    if package.is_file():
        try:
            scripts = json.loads(package.read_text(encoding="utf-8")).get("scripts") or {}
        except ValueError:
            scripts = {}
        if "coverage" in scripts and shutil.which("npm"):
            return ["npm run coverage"]
        if "test" in scripts and shutil.which("npx"):
            return ["npx --no-install c8 --reporter=text --reporter=html "
                    "--reporter=json-summary npm test"]
    python = shlex.quote(sys.executable)
    return [f"{python} -m coverage run -m pytest -q",
            f"{python} -m coverage report",
            f"{python} -m coverage html -d htmlcov",
            f"{python} -m coverage json -o coverage.json"]


@click.command()
@working_dir_option
@click.pass_obj
def coverage(ctx: CoContext, working_dir: Path | None) -> None:
    """Run the tests under coverage: terminal summary, htmlcov/, coverage.json."""
    project = ctx.working_dir(working_dir)
    for command in coverage_commands(project):
        click.echo(f"$ {command}")
        with errors_as_click():
            done = run_process(shlex.split(command), cwd=project, timeout=COVERAGE_TIMEOUT,
                               env=safe_environment())
        click.echo(redact(done.output).rstrip("\n"))
        if done.exit_code != 0 and "coverage run" not in command:
            raise SystemExit(1)
        if done.exit_code != 0:
            click.echo(f"The tests failed (exit {done.exit_code}); the report covers what ran.")
    report = project / "coverage.json"
    if report.is_file():
        total = json.loads(report.read_text(encoding="utf-8")).get("totals", {})
        click.echo(f"Total coverage: {total.get('percent_covered_display', '?')}% "
                   f"(HTML in {project / 'htmlcov'}, JSON in {report})")


@click.command("test-status")
@working_dir_option
@json_option
@click.pass_obj
def test_status(ctx: CoContext, working_dir: Path | None, as_json: bool) -> None:
    """Latest test results per task and per run, and tasks whose verdict changed."""
    project = ctx.working_dir(working_dir)
    with errors_as_click():
        tasks = open_backlog(project).all()
    per_task: list[dict[str, Any]] = []
    per_run: dict[Any, dict[str, Any]] = {}
    changed: list[dict[str, Any]] = []
    for task in tasks:
        verdicts = []
        for run in task.runs:
            tests = run.get("tests")
            verdict = _verdict(tests)
            verdicts.append(verdict)
            per_run[run.get("run_id")] = {"run_id": run.get("run_id"), "branch": run.get("branch"),
                                          "verdict": verdict, "tests": tests}
        latest = task.runs[-1] if task.runs else None
        per_task.append({"id": task.id, "description": task.description,
                         "verdict": verdicts[-1] if verdicts else "not run",
                         "run_id": latest.get("run_id") if latest else None,
                         "tests": latest.get("tests") if latest else None})
        real = [v for v in verdicts if v in ("passed", "failed")]
        if len(real) >= 2 and real[-1] != real[-2]:
            changed.append({"id": task.id, "from": real[-2], "to": real[-1]})
    data = {"tasks": per_task, "runs": list(per_run.values()), "changed": changed}
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not per_task:
        click.echo("No tasks yet.")
        return
    click.echo("Per task (latest run):")
    for item in per_task:
        click.echo(f"  {item['id']:>4}  {item['verdict']:<8} {_counts(item['tests'])}  "
                   f"{item['description']}")
    if per_run:
        click.echo("Per run:")
        for run in per_run.values():
            click.echo(f"  {run['run_id']}  {run['verdict']:<8} {_counts(run['tests'])}  "
                       f"{run['branch']}")
    click.echo("Changed verdict: " + (", ".join(
        f"task {c['id']} {c['from']} -> {c['to']}" for c in changed) or "none"))


def _verdict(tests: Mapping[str, Any] | None) -> str:
    if not tests:
        return "no tests"
    ok = tests.get("exit_code") == 0 and not tests.get("failed") and not tests.get("errors")
    return "passed" if ok and not tests.get("timed_out") else "failed"


def _counts(tests: Mapping[str, Any] | None) -> str:
    if not tests:
        return "-"
    return f"{tests.get('passed')} passed, {tests.get('failed')} failed"


COMMANDS = [coverage, test_status]
