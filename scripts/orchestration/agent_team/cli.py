"""Command-line plumbing shared by both orchestrator scripts: options, the demo, exit codes."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import git

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, AgentTeamError, PlanError, UserError
from .progress import ProgressDisplay

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
DEMO_APP = EXAMPLES_DIR / "demo-app"


def common_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options both orchestrators accept, in the order the usage guide shows them."""
    options = [
        click.option("--feature", help="The feature to build, in plain words."),
        click.option(
            "--project-dir", type=click.Path(file_okay=False, path_type=Path),
            help="The git repository to work on (default: the current directory).",
        ),
        click.option(
            "--api-provider", type=click.Choice(["anthropic", "openai", "scripted"]),
            help="Model provider (default: chosen from which API key is set).",
        ),
        click.option(
            "--model", "model_name", help="Model id, e.g. claude-sonnet-5-5 or gpt-6.1-sol.",
        ),
        click.option(
            "--base-url", help="API base URL, e.g. http://localhost:11434/v1 for Ollama.",
        ),
        click.option(
            "--session", type=click.Path(dir_okay=False, path_type=Path),
            help="Session file for --api-provider scripted.",
        ),
        click.option(
            "--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
            help="orchestrator-config.json (default: looked up in the project).",
        ),
        click.option("--test-command", help="Command that runs the project's tests."),
        click.option(
            "--max-iterations", type=click.IntRange(1, 500),
            help="Most model turns one agent may take on one task.",
        ),
        click.option(
            "--max-api-calls", type=click.IntRange(1), help="Stop after this many API calls.",
        ),
        click.option(
            "--token-budget", type=click.IntRange(1),
            help="Stop before the run's tokens (input, output, cache) exceed this.",
        ),
        click.option(
            "--cost-limit", type=click.FloatRange(0), help="Stop before the estimated cost "
            "in USD exceeds this.",
        ),
        click.option(
            "--record", type=click.Path(dir_okay=False, path_type=Path),
            help="Write every model exchange to FILE; replay it with --api-provider scripted "
            "--session FILE.",
        ),
        click.option("--no-progress", is_flag=True, help="Plain log lines, no live display."),
        click.option("-v", "--verbose", is_flag=True, help="Also print every model and tool call."),
        click.option(
            "--demo", is_flag=True,
            help="Run offline on a copy of the example app with a scripted session.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def prepare_demo(session_name: str) -> tuple[Path, Path, str]:
    """Copy the example app into a fresh git repo; return (project, session file, feature)."""
    session = EXAMPLES_DIR / "sessions" / session_name
    data = json.loads(session.read_text(encoding="utf-8"))
    target = Path(tempfile.mkdtemp(prefix="agent-team-demo-")) / "todo-app"
    shutil.copytree(DEMO_APP, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    repo = git.Repo.init(target, initial_branch="main")
    with repo.config_writer() as writer:
        writer.set_value("user", "name", "Demo User")
        writer.set_value("user", "email", "demo@example.com")
        writer.set_value("commit", "gpgsign", "false")
    repo.git.add("--all")
    repo.git.commit("-m", "Initial version of the todo app")
    return target, session, str(data["feature"])


def run_cli(run: Callable[[], int]) -> None:
    """Run an orchestrator and turn errors into one paragraph and an exit code."""
    try:
        code = run()
    except PlanError as exc:
        click.echo(f"Error: {exc}", err=True)
        for problem in exc.errors:
            click.echo(f"  - {problem}", err=True)
        raise SystemExit(exc.exit_code) from None
    except UserError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except AgentTeamError as exc:
        click.echo(f"Error: {exc}", err=True)
        raise SystemExit(exc.exit_code or EXIT_FAILED) from None
    except KeyboardInterrupt:
        click.echo("Interrupted. Work committed so far is kept on its branches.", err=True)
        raise SystemExit(130) from None
    raise SystemExit(code)


def resolve_run_inputs(
    feature: str | None, project_dir: Path | None, demo: bool, demo_session: str,
    api_provider: str | None, session: Path | None,
) -> tuple[str, Path, str | None, Path | None]:
    """Apply --demo and check the required flags, with errors that say what to pass."""
    if demo:
        if project_dir is not None:
            raise click.UsageError("--demo makes its own project; drop --project-dir.")
        project_dir, demo_file, demo_feature = prepare_demo(demo_session)
        click.echo(f"[Orchestrator] Demo project: {project_dir}")
        return feature or demo_feature, project_dir, "scripted", session or demo_file
    if not feature:
        raise click.UsageError("Missing --feature. Describe the feature, or try --demo.")
    return feature, project_dir or Path.cwd(), api_provider, session


def limit_options(options: dict[str, Any]) -> dict[str, Any]:
    """The budget flags in the config file's `limits` shape (None = not given)."""
    return {
        "max_api_calls": options.pop("max_api_calls", None),
        "token_budget": options.pop("token_budget", None),
        "cost_limit_usd": options.pop("cost_limit", None),
    }


def make_display(options: dict[str, Any]) -> ProgressDisplay:
    """The live progress display (a terminal) or plain lines (--no-progress, pipes, CI)."""
    no_progress = options.pop("no_progress", False)
    verbose = options.pop("verbose", False)
    return ProgressDisplay(sys.stdout, live=False if no_progress else None, verbose=verbose)
