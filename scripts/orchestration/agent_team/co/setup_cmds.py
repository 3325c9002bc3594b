"""Set-up and follow-up commands: init, check, status, tasks, report, resume.

`status`, `tasks` and `report` only read: they never lock or write the state file, so they are
safe while a run goes on (the engine replaces the file atomically, so a read sees one whole
version). What `status` and `tasks show` print is built in agent_team/status_view.py.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click

from ..cli_agents import cli_statuses, preflight
from ..config import build_config
from ..errors import ConfigError, StateError
from ..models import KEY_VARIABLES, detect_provider
from ..roles import CONTEXT_FILES
from ..sandbox import SandboxPolicy, sandbox_status
from ..state_file import STATE_RELATIVE_PATH, apply_journal
from ..state_migrations import migrate_state, schema_version_of
from ..state_schema import SCHEMA_VERSION, encoder, load_schema, utc_now, validate_state
from ..status_view import render_status, render_task, status_data
from ..task_record import TaskRecord, tasks_of
from ..testdetect import detect_tests
from .base import BadInput, CoContext
from .settings import (
    DEFAULT_CONFIG,
    DOCUMENT_DEFAULTS,
    ENV_CONFIG,
    ENV_SLACK,
    ENV_WORKING_DIR,
    find_config,
    load_settings,
)

TEMPLATE_DIR = Path(__file__).resolve().parents[4] / ".ai-agents-template"
AGENTS_DIR = Path(".ai-agents")
REPORTS_DIR = AGENTS_DIR / "reports"
STATE_TEMPLATE = Path("state") / "team-communication.json"
MIN_PYTHON = (3, 10)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
TASK_STATUSES = tuple(load_schema()["$defs"]["task"]["properties"]["status"]["enum"])


# --- reading the project ------------------------------------------------------------------------


def resolve_project(project_dir: Path | None) -> Path:
    """The project directory (default: the current one), which must exist."""
    from_env = os.environ.get(ENV_WORKING_DIR)
    path = (project_dir or (Path(from_env) if from_env else Path.cwd())).expanduser()
    if not path.is_dir():
        raise BadInput(
            f"Project directory {path} does not exist or is not a directory. "
            "Pass --project-dir with the path of your repository."
        )
    return path.resolve()


def load_state(project: Path) -> dict[str, Any] | None:
    """The project's state, validated and migrated in memory; None when there is no file yet.

    Read-only on purpose: unlike `TeamState.read()`, a broken file is reported, never copied
    aside, so looking at a project cannot change it.
    """
    path = project / STATE_RELATIVE_PATH
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadInput(f"Cannot read the team state file {path}: {exc.strerror or exc}.") from None
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise BadInput(
            f"The team state file {path} is not valid JSON ({exc}). Fix it by hand or move it "
            "away; the next run starts a fresh one."
        ) from None
    if not isinstance(data, dict):
        raise BadInput(f"The team state file {path} holds a JSON {type(data).__name__}, "
                       "not an object. Move it away; the next run starts a fresh one.")
    try:
        if schema_version_of(data) != SCHEMA_VERSION:
            data = migrate_state(data)
            data["project_name"] = data.get("project_name") or project.name
        validate_state(data, path)
        apply_journal(path, raw, data)  # a running run's newest changes
    except StateError as exc:
        raise BadInput(str(exc)) from None
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"The team state file {path} cannot be migrated ({exc!r}).") from None
    return data


def require_state(project: Path) -> dict[str, Any]:
    state = load_state(project)
    if state is None:
        raise BadInput(
            f"No team state in {project} ({STATE_RELATIVE_PATH} is missing): nothing has run "
            "here yet. Add tasks with co add \"...\" and run them with co run, or set the "
            "project up with: co init."
        )
    return state


def find_task(state: Mapping[str, Any], task_id: str) -> TaskRecord:
    for task in tasks_of(state):
        if task["task_id"] == task_id:
            return task
    known = ", ".join(t["task_id"] for t in state["tasks"]) or "none yet"
    raise BadInput(f"No task {task_id!r} in the current run (tasks: {known}).")


# --- init ---------------------------------------------------------------------------------------


def template_files() -> list[Path]:
    """Every file of the template, relative to it, in a stable order."""
    if not TEMPLATE_DIR.is_dir():
        raise click.ClickException(f"The project template {TEMPLATE_DIR} is missing from this "
                                   "installation; reinstall or update agent-team.")
    return sorted(p.relative_to(TEMPLATE_DIR) for p in TEMPLATE_DIR.rglob("*") if p.is_file()
                  and "__pycache__" not in p.parts)


def state_for(project: Path) -> str:
    """The template's state file, named after the project and stamped now."""
    data = json.loads((TEMPLATE_DIR / STATE_TEMPLATE).read_text(encoding="utf-8"))
    data["project_name"] = project.name
    data["last_updated"] = utc_now()
    return encoder().encode(data)


def has_commit(project: Path) -> bool:
    if shutil.which("git") is None:
        return False
    probe = subprocess.run(["git", "-C", str(project), "rev-parse", "--verify", "--quiet", "HEAD"],
                           capture_output=True, check=False)
    return probe.returncode == 0


ENV_TEMPLATE = ".env.example"
ENV_TEMPLATE_TEXT = f"""# Copy to .env (kept out of git) or export these in your shell.
# co never writes keys anywhere; `co security-audit` checks that they are set and
# well formed, by name only.
ANTHROPIC_API_KEY=
# OPENAI_API_KEY=
# OPENAI_BASE_URL=http://localhost:11434/v1
# {ENV_CONFIG}=.ai-agents/config.json
# ORCHESTRATOR_LOG_LEVEL=INFO
# {ENV_WORKING_DIR}=/path/to/project
# {ENV_SLACK}=https://hooks.slack.com/services/...
"""


def hide_env_file(project: Path) -> None:
    """Keep .env out of `git status` through info/exclude (the user's .gitignore is theirs)."""
    probe = _git(project, "rev-parse", "--git-path", "info/exclude")
    if probe.returncode != 0:
        return
    exclude = Path(probe.stdout.strip())
    exclude = exclude if exclude.is_absolute() else project / exclude
    lines = exclude.read_text(encoding="utf-8").splitlines() if exclude.is_file() else []
    if "/.env" not in lines:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        exclude.write_text("\n".join([*lines, "/.env"]) + "\n", encoding="utf-8")


# --- check --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One line of `check`: a name, a verdict and, for a problem, what to do about it."""

    name: str
    status: str  # "ok", "warn" or "problem"
    detail: str
    fix: str = ""

    def render(self) -> str:
        line = f"{self.status:<8} {self.name}: {self.detail}"
        return f"{line}. Fix: {self.fix}" if self.fix else line


def _git(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(project), *args], capture_output=True, text=True,
                          check=False)


def check_python() -> Check:
    version = ".".join(str(p) for p in sys.version_info[:3])
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", "ok", f"{version} ({sys.executable})")
    wanted = ".".join(str(p) for p in MIN_PYTHON)
    return Check("python", "problem", f"{version} is too old", f"use Python {wanted} or newer")


def check_git(project: Path) -> list[Check]:
    if shutil.which("git") is None:
        return [Check("git", "problem", "not found on PATH", "install git and run check again")]
    found = Check("git", "ok", _git(project, "--version").stdout.strip())
    if _git(project, "rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        return [found, Check("repository", "problem", f"{project} is not a git repository",
                             f"run `git init` in {project}, then commit your files")]
    if _git(project, "rev-parse", "--verify", "--quiet", "HEAD").returncode != 0:
        return [found, Check("repository", "problem", "the repository has no commit yet",
                             "commit your files (git add -A && git commit -m \"Initial commit\"); "
                             "feature branches start from a commit")]
    branch = _git(project, "branch", "--show-current").stdout.strip() or "detached HEAD"
    return [found, Check("repository", "ok", f"{project} on {branch}")]


def check_sdks(provider: str | None) -> list[Check]:
    checks = []
    for name in ("anthropic", "openai"):
        if importlib.util.find_spec(name) is not None:
            checks.append(Check(f"{name} SDK", "ok", importlib.metadata.version(name)))
        elif provider == name:
            checks.append(Check(f"{name} SDK", "problem", "not installed, and the run uses it",
                                "pip install -r scripts/orchestration/requirements.txt"))
        else:
            checks.append(Check(f"{name} SDK", "warn",
                                f"not installed (needed only for --api-provider {name})"))
    if all(c.status != "ok" for c in checks):
        checks.append(Check("SDKs", "problem", "neither the anthropic nor the openai SDK is "
                            "installed", "pip install -r scripts/orchestration/requirements.txt"))
    return checks


def _without_credentials(url: str) -> str:
    """The URL with any user:password@ part removed, safe to print."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def check_keys(provider: str | None, configured: str | None) -> list[Check]:
    """Which keys are set, by name only; their values never reach any output."""
    names = ", ".join(f"{v} {'set' if os.environ.get(v) else 'not set'}"
                      for v in KEY_VARIABLES.values())
    base_url = os.environ.get("OPENAI_BASE_URL", "")
    wanted = KEY_VARIABLES.get(configured or "")
    if provider is None:
        keys = Check("API keys", "problem", names, "export ANTHROPIC_API_KEY or OPENAI_API_KEY "
                     "(or OPENAI_BASE_URL for a local server); --demo needs neither")
    elif wanted and not os.environ.get(wanted) and not (configured == "openai" and base_url):
        keys = Check("API keys", "problem", f"{names}; the config asks for {configured}",
                     f"export {wanted}, or change api_provider in the config")
    else:
        keys = Check("API keys", "ok", f"{names}; provider {provider}")
    if not base_url:
        return [keys, Check("OPENAI_BASE_URL", "ok", "not set (the official OpenAI API)")]
    shown = _without_credentials(base_url)
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        url = Check("OPENAI_BASE_URL", "problem", f"{shown!r} is not an http(s) URL",
                    "use e.g. http://localhost:11434/v1 (Ollama)")
    elif not parts.path.strip("/"):
        url = Check("OPENAI_BASE_URL", "warn",
                    f"{shown} has no path; OpenAI-compatible servers usually serve /v1")
    else:
        url = Check("OPENAI_BASE_URL", "ok", shown)
    return [keys, url]


def check_context(project: Path) -> Check:
    context = project / AGENTS_DIR / "context"
    missing, template, written = [], [], []
    for name in CONTEXT_FILES:
        path = context / name
        if not path.is_file():
            missing.append(name)
        elif path.read_bytes() == (TEMPLATE_DIR / "context" / name).read_bytes():
            template.append(name)
        else:
            written.append(name)
    parts = [f"{', '.join(written)} written"] if written else []
    parts += [f"{', '.join(template)} still the template"] if template else []
    parts += [f"{', '.join(missing)} missing"] if missing else []
    status = "ok" if not (missing or template) else "warn"
    return Check("context", status, "; ".join(parts) + (
        "" if status == "ok" else " (optional; these files go into every agent's prompt)"))


def check_clis(config: Mapping[str, Any]) -> list[Check]:
    """Coding-agent CLIs: installed or not, versions, and what stops a run (preflight)."""
    checks = []
    for cli in cli_statuses(config):
        used = f"; used by {', '.join(cli.roles)}" if cli.roles else ""
        if cli.path:
            checks.append(Check(f"{cli.name} CLI", "ok",
                                f"{cli.version or 'version unknown'} ({cli.path}){used}"))
        elif not cli.roles:
            checks.append(Check(f"{cli.name} CLI", "info", "not installed; no role uses it",
                                cli.install))
    for problem in preflight(config):
        checks.append(Check(f"{problem.role} worker", "problem", problem.message.rstrip(".")))
    return checks


def check_sandbox(section: dict[str, Any] | None) -> Check:
    """Whether agents' commands can run in the sandbox, or why not and how to fix it."""
    policy = SandboxPolicy.from_config(section)
    if not policy.enabled:
        return Check("sandbox", "warn", "turned off in the config (sandbox.enabled: false); "
                     "agents' commands and tests run unconfined, as you")
    status = sandbox_status(policy)
    if status.available:
        network = "network allowed" if policy.network else "no network"
        return Check("sandbox", "ok", f"{status.detail}; {network}")
    return Check("sandbox", "problem", f"{status.detail}; runs are refused", status.fix)


def run_checks(project: Path, config_path: Path | None) -> list[Check]:
    checks = [check_python(), *check_git(project)]
    config = None
    try:
        config = build_config(project_dir=project, config_path=config_path)
        source = config.source or "no config file; built-in defaults"
        checks.append(Check("config", "ok", str(source)))
    except ConfigError as exc:
        checks.append(Check("config", "problem", str(exc).rstrip("."),
                            "edit the file; every key is in the README's Configuration section"))
    if config is not None:
        checks += check_clis(config.data)
    configured = config["api_provider"] if config else None
    provider = configured or detect_provider()
    if provider != "scripted":
        checks += check_sdks(provider)
        checks += check_keys(provider, configured)
    try:
        state = load_state(project)
        detail = (f"{STATE_RELATIVE_PATH} valid (schema version {SCHEMA_VERSION})" if state
                  else f"{STATE_RELATIVE_PATH} not created yet (the first run creates it)")
        checks.append(Check("state", "ok", detail))
    except BadInput as exc:
        checks.append(Check("state", "problem", exc.message.rstrip("."),
                            "repair the file, or move it away to start fresh"))
    command = config["test_command"] if config else None
    detected = None if command else detect_tests(project)
    if command:
        checks.append(Check("test command", "ok", f"`{command}` (configured)"))
    elif detected:
        checks.append(Check("test command", "ok",
                            f"`{detected.command}` (detected: {detected.reason})"))
    else:
        checks.append(Check("test command", "problem", "none configured and none detected",
                            "set test_command in orchestrator-config.json or pass --test-command"))
    checks.append(check_sandbox(config["sandbox"] if config else None))
    checks.append(check_context(project))
    return checks


def check_co(project: Path, co_config: Path | None) -> list[Check]:
    """The co config.json, the agent CLI it names, and the working directory."""
    checks = [Check("working dir", "ok", str(project))]
    try:
        settings = load_settings(find_config(co_config, project))
        checks.append(Check("co config", "ok", str(settings.source or "no config.json; the "
                                                   "document's defaults")))
    except ConfigError as exc:
        checks.append(Check("co config", "problem", str(exc).replace("\n", " ").rstrip("."),
                            "edit config.json; every key is in the README's `co` section"))
        return checks
    found = shutil.which(settings.cli_command)
    if found:
        checks.append(Check("agent CLI", "ok", f"{settings.cli_command} at {found}"))
    else:
        checks.append(Check("agent CLI", "warn", f"{settings.cli_command!r} not on PATH "
                            "(optional: co runs its own agents through the SDKs)"))
    return checks


def startup_problems(project: Path) -> list[str]:
    """What stops a run before it starts: Python, git, the SDK and the keys."""
    checks = [check_python(), *check_git(project)]
    provider = detect_provider()
    if provider not in (None, "scripted"):
        checks += check_sdks(provider)
    return [f"{c.name}: {c.detail}. Fix: {c.fix}" for c in checks if c.status == "problem"]


# --- the command line ---------------------------------------------------------------------------

project_dir_option = click.option(
    "--working-dir", "-d", "--project-dir", "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="The git repository (default: $ORCHESTRATOR_WORKING_DIR or the current directory).",
)


@click.command()
@project_dir_option
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def init(project_dir: Path | None, force: bool) -> None:
    """Copy the .ai-agents template (state, context, config) into a repository."""
    project = resolve_project(project_dir)
    target = project / AGENTS_DIR
    files = template_files()
    existing = [rel for rel in files if (target / rel).exists()]
    extras = {DEFAULT_CONFIG: json.dumps(DOCUMENT_DEFAULTS, indent=2) + "\n",
              Path(ENV_TEMPLATE): ENV_TEMPLATE_TEXT}
    taken = [rel for rel in extras if (project / rel).exists()]
    if (existing or taken) and not force:
        listed = "\n".join([f"  {AGENTS_DIR / rel}" for rel in existing]
                           + [f"  {rel}" for rel in taken])
        raise BadInput(f"These files already exist in {project}:\n{listed}\n"
                       "Nothing was changed. Run init --force to overwrite them.")
    try:
        for rel in files:
            destination = target / rel
            destination.parent.mkdir(parents=True, exist_ok=True)
            if rel == STATE_TEMPLATE:
                destination.write_text(state_for(project), encoding="utf-8")
            else:
                shutil.copyfile(TEMPLATE_DIR / rel, destination)
            verb = "overwrote" if rel in existing else "created"
            click.echo(f"{verb} {AGENTS_DIR / rel}")
        for rel, text in extras.items():
            (project / rel).parent.mkdir(parents=True, exist_ok=True)
            (project / rel).write_text(text, encoding="utf-8")
            click.echo(f"{'overwrote' if rel in taken else 'created'} {rel}")
        for directory in ("logs", "reports", "worktrees"):
            (target / directory).mkdir(parents=True, exist_ok=True)
        hide_env_file(project)
    except OSError as exc:
        raise BadInput(f"Cannot write into {target}: {exc.strerror or exc}.") from None
    click.echo("\nNext: describe your project in .ai-agents/context/*.md (every agent reads them),"
               "\nreview .ai-agents/orchestrator-config.json, then run: co check")
    if not has_commit(project):
        click.echo(f"Note: {project} needs to be a git repository with at least one commit "
                   "before a run (git init && git add -A && git commit -m \"Initial commit\").")


@click.command()
@project_dir_option
@click.option("--engine-config", "config_path", help="orchestrator-config.json to check.",
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_obj
def check(ctx: CoContext | None, project_dir: Path | None, config_path: Path | None) -> None:
    """Check that a run can start here: Python, git, SDKs, keys, configs, state, tests."""
    project = resolve_project(project_dir)
    checks = run_checks(project, config_path)
    checks += check_co(project, ctx.config_path if ctx else None)
    for item in checks:
        click.echo(item.render())
    problems = sum(1 for c in checks if c.status == "problem")
    if problems:
        click.echo(f"\n{problems} problem(s) to fix before a run.")
        raise SystemExit(1)
    click.echo("\nReady to run.")


@click.command()
@project_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def status(project_dir: Path | None, as_json: bool) -> None:
    """Show the current feature, tasks, agents and usage (safe while a run goes on)."""
    project = resolve_project(project_dir)
    data = status_data(project, load_state(project))
    click.echo(json.dumps(data, indent=2) if as_json else render_status(data))


@click.group()
def tasks() -> None:
    """List the current run's tasks or show one of them."""


@tasks.command("list")
@project_dir_option
@click.option("--status", "wanted", type=click.Choice(TASK_STATUSES),
              help="Only tasks with this status.")
def tasks_list(project_dir: Path | None, wanted: str | None) -> None:
    """One line per task: id, status, role, progress, description."""
    state = require_state(resolve_project(project_dir))
    rows = [t for t in state["tasks"] if wanted is None or t["status"] == wanted]
    if not rows:
        click.echo("No tasks" + (f" with status {wanted}." if wanted else " yet."))
        return
    for t in rows:
        click.echo(f"{t['task_id']:<10} {t['status']:<11} {t['assigned_to']:<14} "
                   f"{t.get('progress', 0):>3}%  {t['description']}")


@tasks.command("show")
@project_dir_option
@click.argument("task_id")
def tasks_show(project_dir: Path | None, task_id: str) -> None:
    """Everything recorded about one task, including its result and usage."""
    state = require_state(resolve_project(project_dir))
    click.echo(render_task(find_task(state, task_id)))


@click.command()
@project_dir_option
@click.option("--run", "run_id", help="The run id (default: the newest report).")
def report(project_dir: Path | None, run_id: str | None) -> None:
    """Print a run's summary (Markdown) from .ai-agents/reports/."""
    project = resolve_project(project_dir)
    directory = project / REPORTS_DIR
    reports = sorted(directory.glob("*.md"), key=lambda p: (p.stat().st_mtime, p.name))
    if not reports:
        raise BadInput(f"No run reports in {directory} yet: a run writes one when it finishes.")
    if run_id is None:
        chosen = reports[-1]
    else:
        chosen = directory / f"{run_id}.md"
        if not RUN_ID.fullmatch(run_id) or not chosen.is_file():
            newest = ", ".join(p.stem for p in reversed(reports[-10:]))
            raise BadInput(f"No report for run {run_id!r} in {directory} (newest: {newest}).")
    click.echo(chosen.read_text(encoding="utf-8").rstrip("\n"))


@click.command(context_settings={"ignore_unknown_options": True})
@project_dir_option
@click.argument("orchestrator_args", nargs=-1, type=click.UNPROCESSED)
def resume(project_dir: Path | None, orchestrator_args: tuple[str, ...]) -> None:
    """Resume the project's unfinished run (file_based_orchestrator.py --resume).

    Other options, such as --max-workers 2, are passed on to the orchestrator.
    """
    project = resolve_project(project_dir)
    args = ["--resume", "--project-dir", str(project), *orchestrator_args]
    command = orchestrator_main()
    try:
        command.main(args=args, prog_name="file_based_orchestrator.py", standalone_mode=False)
    except click.NoSuchOption as exc:
        if exc.option_name != "--resume":
            raise
        raise BadInput("This file_based_orchestrator.py cannot resume runs yet (it has no "
                       "--resume option). Update agent-team, or start the feature again with "
                       "--feature.") from None


def orchestrator_main() -> click.Command:
    """The file-based orchestrator's command, imported only when needed."""
    import file_based_orchestrator

    return file_based_orchestrator.main


COMMANDS = [init, check, status, tasks, report, resume]
