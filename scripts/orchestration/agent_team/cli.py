"""Command-line plumbing shared by the orchestrator scripts and the custom examples: options,
the demo, the run's inputs, the run itself with its display, and exit codes.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click
import git

from .errors import EXIT_BAD_INPUT, EXIT_FAILED, AgentTeamError, PlanError, UserError
from .process import hide_secrets_from_proc
from .progress import ProgressDisplay

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "examples"
DEMO_APP = EXAMPLES_DIR / "demo-app"
#: What a demo copy of an example app leaves out: caches of earlier runs there.
DEMO_IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache")

#: (feature, project directory, API provider, session file) of one run.
RunInputs = tuple[str, Path, str | None, Path | None]


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


#: --max-workers of the file-based orchestrator and the scripts built on it.
max_workers_option = click.option(
    "--max-workers", type=click.IntRange(1, 64),
    help="Most agents working at once (default: coordination.max_workers, 3).",
)


def prepare_demo(
    session_name: str,
    app_dir: Path = DEMO_APP,
    *,
    project_name: str = "todo-app",
    message: str = "Initial version of the todo app",
) -> tuple[Path, Path, str]:
    """Copy an example app into a fresh git repo; return (project, session file, feature).

    Args:
        session_name: The session file under examples/sessions/ the demo replays.
        app_dir: The example app to copy (default: examples/demo-app).
        project_name: The copy's directory name, inside a new temporary directory.
        message: The message of the copy's first commit.
    """
    session = EXAMPLES_DIR / "sessions" / session_name
    data = json.loads(session.read_text(encoding="utf-8"))
    target = Path(tempfile.mkdtemp(prefix="agent-team-demo-")) / project_name
    shutil.copytree(app_dir, target, ignore=DEMO_IGNORE)
    repo = git.Repo.init(target, initial_branch="main")
    with repo.config_writer() as writer:
        writer.set_value("user", "name", "Demo User")
        writer.set_value("user", "email", "demo@example.com")
        writer.set_value("commit", "gpgsign", "false")
    repo.git.add("--all")
    repo.git.commit("-m", message)
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
    *, prepare: Callable[[str], tuple[Path, Path, str]] = prepare_demo,
) -> RunInputs:
    """Apply --demo and check the required flags, with errors that say what to pass.

    `prepare(demo_session)` makes the demo project; an example with an app of its own passes
    its own.
    """
    if demo:
        if project_dir is not None:
            raise click.UsageError("--demo makes its own project; drop --project-dir.")
        project_dir, demo_file, demo_feature = prepare(demo_session)
        click.echo(f"[Orchestrator] Demo project: {project_dir}")
        return feature or demo_feature, project_dir, "scripted", session or demo_file
    if not feature:
        raise click.UsageError("Missing --feature. Describe the feature, or try --demo.")
    return feature, project_dir or Path.cwd(), api_provider, session


def run_inputs(
    options: Mapping[str, Any],
    demo_session: str,
    *,
    resume: bool = False,
    prepare: Callable[[str], tuple[Path, Path, str]] = prepare_demo,
) -> RunInputs:
    """(feature, project, provider, session) from the common options.

    With `resume` the feature is the one the state file recorded, so --feature and --demo are
    refused and the returned feature is empty.
    """
    if resume:
        if options["feature"] or options["demo"]:
            raise click.UsageError("--resume continues the recorded feature; drop "
                                   "--feature and --demo.")
        return "", options["project_dir"] or Path.cwd(), options["api_provider"], options["session"]
    return resolve_run_inputs(
        options["feature"], options["project_dir"], options["demo"], demo_session,
        options["api_provider"], options["session"], prepare=prepare,
    )


def orchestrator_options(
    options: Mapping[str, Any], api_provider: str | None, session: Path | None
) -> dict[str, Any]:
    """The orchestrator's constructor keywords that come straight from the common options."""
    return {
        "api_provider": api_provider,
        "model_name": options["model_name"],
        "base_url": options["base_url"],
        "session": session,
        "config_path": options["config_path"],
        "test_command": options["test_command"],
        "max_iterations": options["max_iterations"],
        "limits": limit_options(options),
        "record": options.get("record"),
    }


def run_main(
    options: dict[str, Any],
    orchestrator_class: Callable[..., Any],
    demo_session: str,
    *,
    resume: Callable[[Any], dict[str, Any]] | None = None,
    show_history: bool = False,
    **settings: Any,
) -> None:
    """The whole `main` of an orchestrator script: inputs, the run with its display, the result.

    Args:
        options: The common options as click passed them.
        orchestrator_class: What to build, with `settings` as extra constructor keywords.
        demo_session: The session file --demo replays.
        resume: Continues the recorded feature with the orchestrator instead of a new run.
        show_history: Also print the git command that shows the feature branch's history.
    """
    display = make_display(options)

    def run() -> int:
        feature, project_dir, provider, session = run_inputs(
            options, demo_session, resume=resume is not None
        )
        hide_secrets_from_proc()  # agents' commands run as the user and could read it there
        stored = resumed_settings(project_dir) if resume is not None else None
        orchestrator = orchestrator_class(
            project_dir, **settings, **orchestrator_options(options, provider, session),
            output=display.write_line, progress=display, stored_settings=stored,
        )
        display.refresh_seconds = orchestrator.team.settings.coordination.check_interval_seconds
        summary = resume(orchestrator) if resume is not None else orchestrator.run(feature)
        branch = summary["feature_branch"]
        display.write_line(f"[Orchestrator] Result: branch {branch} in {project_dir}")
        if show_history:
            display.write_line(
                f"[Orchestrator] See it with: git -C {project_dir} log --graph --oneline {branch}")
        return int(summary["exit_code"])

    try:
        run_cli(run)
    finally:
        display.close()


def resumed_settings(project_dir: Path) -> dict[str, Any] | None:
    """The last run's effective settings, so `--resume` needs no flags (flags still win)."""
    from .run_frame import stored_settings
    from .state import TeamState

    store = TeamState.for_project(project_dir, create=False, must_exist=False)
    return stored_settings(store)


def limit_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The budget flags in the config file's `limits` shape (None = not given)."""
    return {
        "max_api_calls": options.get("max_api_calls"),
        "token_budget": options.get("token_budget"),
        "cost_limit_usd": options.get("cost_limit"),
    }


def make_display(options: dict[str, Any]) -> ProgressDisplay:
    """The live progress display (a terminal) or plain lines (--no-progress, pipes, CI)."""
    no_progress = options.pop("no_progress", False)
    verbose = options.pop("verbose", False)
    return ProgressDisplay(sys.stdout, live=False if no_progress else None, verbose=verbose)
