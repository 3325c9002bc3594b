"""`co` set-up commands (init, check, status, tasks, report, resume) on real repositories."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import click
import file_based_orchestrator
import pytest
from agent_team import state_ops
from agent_team.co import setup_cmds as team
from agent_team.co.cli import main as cli
from agent_team.state import TeamState
from agent_team.state_file import STATE_RELATIVE_PATH
from agent_team.state_schema import utc_now
from click.testing import CliRunner, Result
from filelock import FileLock

from tests.conftest import make_repo

FAKE_KEY = "sk-ant-api03-" + "k" * 40


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A Python project in a real repository with one commit."""
    path = tmp_path / "shop"
    make_repo(path, {"shop/__init__.py": "", "tests/test_shop.py": "def test_ok():\n    pass\n"})
    return path


def running_state(project: Path) -> TeamState:
    """A state as a run leaves it halfway: a feature, three tasks, two live agents, usage."""
    state = TeamState.for_project(project)
    now = utc_now()

    def apply(s: dict[str, Any]) -> None:
        s["current_feature"] = {
            "id": "checkout", "title": "Checkout with saved cards", "branch": "feature/checkout",
            "base_branch": "main", "status": "in_progress", "run_id": "20250101-000000-abcdef",
            "started_at": now,
        }
        s["tasks"] = [
            {"task_id": "TASK-001", "description": "Card vault API", "assigned_to": "backend-dev",
             "dependencies": [], "status": "completed", "progress": 100,
             "branch": "feature/checkout-agents/backend-dev/TASK-001",
             "result": {"summary": "Vault done", "completed_items": ["POST /cards"],
                        "files_modified": ["shop/vault.py"], "blockers": []}},
            {"task_id": "TASK-002", "description": "Checkout form", "assigned_to": "frontend-dev",
             "dependencies": ["TASK-001"], "status": "in_progress", "progress": 40,
             "branch": "feature/checkout-agents/frontend-dev/TASK-002"},
            {"task_id": "TASK-003", "description": "End-to-end tests", "assigned_to": "qa-tester",
             "dependencies": ["TASK-002"], "status": "pending", "progress": 0},
        ]
        state_ops.set_agent_in(s, "frontend-dev@TASK-002", status="working",
                               current_task="TASK-002", turn=3, last_tool="write_file", tokens=900)
        state_ops.set_agent_in(s, "backend-dev@TASK-001", status="done", current_task="TASK-001")
        state_ops.add_usage_to(s, "backend-dev", {"input_tokens": 1000, "output_tokens": 200},
                               cost_usd=0.0123, task_id="TASK-001")

    state.update(apply)
    return state


# --- init ---------------------------------------------------------------------------------------


def test_init_copies_the_template(project: Path) -> None:
    result = invoke("init", "--project-dir", str(project))
    assert result.exit_code == 0, result.output
    for rel in team.template_files():
        assert (project / ".ai-agents" / rel).is_file()
        assert f"created {Path('.ai-agents') / rel}" in result.output
    state = TeamState.for_project(project, create=False).read()
    assert state["project_name"] == "shop"
    assert state["tasks"] == []
    config = project / ".ai-agents" / "orchestrator-config.json"
    assert config.read_bytes() == (team.TEMPLATE_DIR / "orchestrator-config.json").read_bytes()
    assert "Note:" not in result.output


def test_init_refuses_to_overwrite_and_lists_the_files(project: Path) -> None:
    invoke("init", "--project-dir", str(project))
    context = project / ".ai-agents" / "context" / "architecture.md"
    context.write_text("# Our architecture\n")

    result = invoke("init", "--project-dir", str(project))

    assert result.exit_code == 2
    assert ".ai-agents/context/architecture.md" in result.output
    assert ".ai-agents/state/team-communication.json" in result.output
    assert "--force" in result.output
    assert context.read_text() == "# Our architecture\n"


def test_init_force_overwrites(project: Path) -> None:
    invoke("init", "--project-dir", str(project))
    context = project / ".ai-agents" / "context" / "architecture.md"
    context.write_text("# Our architecture\n")

    result = invoke("init", "--project-dir", str(project), "--force")

    assert result.exit_code == 0, result.output
    assert "overwrote .ai-agents/context/architecture.md" in result.output
    assert context.read_bytes() == (team.TEMPLATE_DIR / "context" / "architecture.md").read_bytes()


def test_init_in_a_directory_without_commits_says_what_a_run_needs(tmp_path: Path) -> None:
    result = invoke("init", "--project-dir", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert "Note:" in result.output and "git init" in result.output


def test_missing_project_dir_is_a_user_error(tmp_path: Path) -> None:
    for command in (["init"], ["check"], ["status"], ["tasks", "list"], ["report"], ["resume"]):
        result = invoke(*command, "--project-dir", str(tmp_path / "nope"))
        assert result.exit_code == 2, command
        assert "does not exist" in result.output


# --- check --------------------------------------------------------------------------------------


def lines_of(result: Result) -> dict[str, str]:
    """check's output by check name: {"git": "ok       git: git version ...", ...}."""
    found = {}
    for line in result.output.splitlines():
        if line[:8].strip() in ("ok", "warn", "problem"):
            found[line[9:].split(":", 1)[0]] = line
    return found


def test_check_passes_on_a_ready_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)
    invoke("init", "--project-dir", str(project))

    result = invoke("check", "--project-dir", str(project))

    assert result.exit_code == 0, result.output
    lines = lines_of(result)
    for name in ("python", "git", "repository", "config", "API keys", "OPENAI_BASE_URL", "state",
                 "test command", "context"):
        assert name in lines, name
    assert lines["API keys"].startswith("ok")
    assert "ANTHROPIC_API_KEY set, OPENAI_API_KEY not set" in lines["API keys"]
    assert "orchestrator-config.json" in lines["config"]
    assert "pytest" in lines["test command"]
    assert "still the template" in lines["context"] and lines["context"].startswith("warn")
    assert FAKE_KEY not in result.output and "kkkk" not in result.output
    assert result.output.rstrip().endswith("Ready to run.")


def test_check_reports_each_problem_with_a_fix(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "orchestrator-config.json").write_text('{"coordination": {"max_wokers": 2}}')

    result = invoke("check", "--project-dir", str(plain))

    assert result.exit_code == 1
    lines = lines_of(result)
    for name in ("repository", "config", "API keys", "test command"):
        assert lines[name].startswith("problem"), lines[name]
        assert "Fix:" in lines[name]
    assert "$.coordination.max_wokers" in lines["config"]
    assert "git init" in lines["repository"]
    assert "problem(s) to fix" in result.output


def test_check_finds_a_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "empty"
    repo.mkdir()
    subprocess.run(["git", "init", "--quiet", str(repo)], check=True)
    lines = lines_of(invoke("check", "--project-dir", str(repo)))
    assert "no commit" in lines["repository"]


def test_check_reads_a_broken_state_without_touching_it(
    project: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = project / STATE_RELATIVE_PATH
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 1, "tasks": "many"}')

    result = invoke("check", "--project-dir", str(project))

    assert result.exit_code == 1
    assert lines_of(result)["state"].startswith("problem")
    assert path.read_text() == '{"schema_version": 1, "tasks": "many"}'
    assert sorted(p.name for p in path.parent.iterdir()) == ["team-communication.json"]


def test_check_shows_a_local_base_url_without_credentials(
    project: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://user:hunter2@localhost:11434/v1")

    result = invoke("check", "--project-dir", str(project))

    assert result.exit_code == 0, result.output
    lines = lines_of(result)
    assert lines["OPENAI_BASE_URL"] == "ok       OPENAI_BASE_URL: http://localhost:11434/v1"
    assert "provider openai" in lines["API keys"]
    assert "hunter2" not in result.output


def test_check_flags_a_missing_sdk_for_the_chosen_provider(
    project: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    real = team.importlib.util.find_spec
    monkeypatch.setattr(team.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openai" else real(name, *a))
    (project / "orchestrator-config.json").write_text('{"api_provider": "openai"}')

    lines = lines_of(invoke("check", "--project-dir", str(project)))

    assert lines["openai SDK"].startswith("problem") and "pip install" in lines["openai SDK"]
    assert lines["anthropic SDK"].startswith("ok")


def test_check_flags_an_old_python(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(team, "MIN_PYTHON", (99, 0))
    result = invoke("check", "--project-dir", str(project))
    assert result.exit_code == 1
    assert "use Python 99.0 or newer" in lines_of(result)["python"]


def test_check_config_option_must_name_a_file(project: Path) -> None:
    result = invoke("check", "--project-dir", str(project), "--engine-config",
                    str(project / "no.json"))
    assert result.exit_code == 2
    assert "does not exist" in result.output


# --- status -------------------------------------------------------------------------------------


def test_status_without_a_state_says_nothing_ran(project: Path) -> None:
    result = invoke("status", "--project-dir", str(project))
    assert result.exit_code == 0
    assert "nothing has run here" in result.output
    data = json.loads(invoke("status", "--project-dir", str(project), "--json").output)
    assert data["exists"] is False and data["tasks"] == [] and data["feature"] is None


def test_status_shows_feature_tasks_agents_and_usage(project: Path) -> None:
    running_state(project)

    result = invoke("status", "--project-dir", str(project))

    assert result.exit_code == 0, result.output
    out = result.output
    assert "Feature: Checkout with saved cards [in_progress]" in out
    assert "Tasks: 3 (1 completed, 1 in_progress, 1 pending)" in out
    assert "TASK-002   in_progress frontend-dev    40%  feature/checkout-agents/" in out
    assert "frontend-dev@TASK-002    working  task TASK-002, turn 3, last tool write_file" in out
    assert "1 API calls, 1,200 tokens" in out and "~$0.0123" in out


def test_status_json_is_machine_readable(project: Path) -> None:
    running_state(project)

    data = json.loads(invoke("status", "--project-dir", str(project), "--json").output)

    assert data["feature"]["branch"] == "feature/checkout"
    assert [(t["task_id"], t["status"], t["progress"]) for t in data["tasks"]] == [
        ("TASK-001", "completed", 100), ("TASK-002", "in_progress", 40),
        ("TASK-003", "pending", 0)]
    assert data["agents"]["frontend-dev@TASK-002"]["tokens"] == 900
    assert data["usage"]["api_calls"] == 1 and data["usage"]["cost_usd"] == 0.0123
    assert data["usage_by_agent"]["backend-dev"]["input_tokens"] == 1000


def test_status_reads_while_a_run_holds_its_locks(project: Path) -> None:
    state = running_state(project)
    before = state.path.read_bytes()
    run_lock = FileLock(str(project / ".git" / "agent-team-run.lock"))
    with run_lock.acquire(timeout=1), FileLock(str(state.lock_path)).acquire(timeout=1):
        result = invoke("status", "--project-dir", str(project), "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["feature"]["status"] == "in_progress"
    assert state.path.read_bytes() == before


def test_status_on_a_broken_state_is_a_user_error(project: Path) -> None:
    path = project / STATE_RELATIVE_PATH
    path.parent.mkdir(parents=True)
    path.write_text("{not json")

    result = invoke("status", "--project-dir", str(project))

    assert result.exit_code == 2
    assert "is not valid JSON" in result.output and str(path) in result.output
    assert [p.name for p in path.parent.iterdir()] == ["team-communication.json"]


# --- tasks --------------------------------------------------------------------------------------


def test_tasks_list_and_filter(project: Path) -> None:
    running_state(project)

    everything = invoke("tasks", "list", "--project-dir", str(project))
    pending = invoke("tasks", "list", "--project-dir", str(project), "--status", "pending")
    failed = invoke("tasks", "list", "--project-dir", str(project), "--status", "failed")

    assert [line.split()[0] for line in everything.output.splitlines()] == [
        "TASK-001", "TASK-002", "TASK-003"]
    assert pending.output.splitlines() == [
        "TASK-003   pending     qa-tester        0%  End-to-end tests"]
    assert failed.output.strip() == "No tasks with status failed."


def test_tasks_list_rejects_an_unknown_status(project: Path) -> None:
    running_state(project)
    result = invoke("tasks", "list", "--project-dir", str(project), "--status", "done")
    assert result.exit_code == 2
    assert "'done' is not one of" in result.output


def test_tasks_show_prints_the_result(project: Path) -> None:
    running_state(project)

    result = invoke("tasks", "show", "TASK-001", "--project-dir", str(project))

    assert result.exit_code == 0
    assert result.output.startswith("TASK-001: Card vault API\n")
    assert "  assigned_to: backend-dev" in result.output
    assert "    file: shop/vault.py" in result.output
    assert "    done: POST /cards" in result.output
    assert "usage: 1 API calls" in result.output


def test_tasks_show_unknown_id_lists_the_known_ones(project: Path) -> None:
    running_state(project)
    result = invoke("tasks", "show", "TASK-9", "--project-dir", str(project))
    assert result.exit_code == 2
    assert "No task 'TASK-9'" in result.output and "TASK-001, TASK-002, TASK-003" in result.output


def test_tasks_without_a_state_is_a_user_error(project: Path) -> None:
    result = invoke("tasks", "list", "--project-dir", str(project))
    assert result.exit_code == 2
    assert "nothing has run here yet" in result.output


# --- report -------------------------------------------------------------------------------------


def write_reports(project: Path) -> Path:
    reports = project / ".ai-agents" / "reports"
    reports.mkdir(parents=True)
    for index, run_id in enumerate(("20250102-000000-bbbbbb", "20250101-000000-aaaaaa")):
        (reports / f"{run_id}.md").write_text(f"# Run {run_id}\n")
        (reports / f"{run_id}.json").write_text("{}")
        os.utime(reports / f"{run_id}.md", (1_700_000_000 + index, 1_700_000_000 + index))
    return reports


def test_report_prints_the_newest_summary(project: Path) -> None:
    write_reports(project)
    result = invoke("report", "--project-dir", str(project))
    assert result.exit_code == 0
    assert result.output == "# Run 20250101-000000-aaaaaa\n"


def test_report_prints_a_chosen_run(project: Path) -> None:
    write_reports(project)
    result = invoke("report", "--project-dir", str(project), "--run", "20250102-000000-bbbbbb")
    assert result.output == "# Run 20250102-000000-bbbbbb\n"


@pytest.mark.parametrize("run_id", ["20990101-000000-zzzzzz", "../../etc/passwd"])
def test_report_unknown_run_lists_the_runs(project: Path, run_id: str) -> None:
    write_reports(project)
    result = invoke("report", "--project-dir", str(project), "--run", run_id)
    assert result.exit_code == 2
    assert "newest: 20250101-000000-aaaaaa, 20250102-000000-bbbbbb" in result.output


def test_report_without_reports_is_a_user_error(project: Path) -> None:
    result = invoke("report", "--project-dir", str(project))
    assert result.exit_code == 2
    assert "No run reports" in result.output


# --- resume -------------------------------------------------------------------------------------


def test_resume_forwards_to_the_orchestrator(
    project: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[tuple[str, ...]] = []

    @click.command(context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def fake_main(args: tuple[str, ...]) -> None:
        received.append(args)
        raise SystemExit(3)

    monkeypatch.setattr(file_based_orchestrator, "main", fake_main)

    result = invoke("resume", "--project-dir", str(project), "--max-workers", "2")

    assert received == [("--resume", "--project-dir", str(project), "--max-workers", "2")]
    assert result.exit_code == 3


def test_resume_explains_an_orchestrator_without_resume(
    project: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    @click.command()
    @click.option("--project-dir")
    def old_main(project_dir: str) -> None:
        raise AssertionError("must not run")

    monkeypatch.setattr(file_based_orchestrator, "main", old_main)

    result = invoke("resume", "--project-dir", str(project))

    assert result.exit_code == 2
    assert "cannot resume runs yet" in result.output
    assert "Traceback" not in result.output


# --- co additions: init's config and .env template, the document's config and variables -------


def test_init_writes_config_env_template_and_dirs(project: Path) -> None:
    result = invoke("init", "-d", str(project))
    assert result.exit_code == 0, result.output
    config = json.loads((project / ".ai-agents" / "config.json").read_text())
    assert config["execution"]["max_workers"] == 3 and "notifications" in config
    assert "ANTHROPIC_API_KEY=" in (project / ".env.example").read_text()
    assert (project / ".ai-agents" / "logs").is_dir()
    assert "/.env" in (project / ".git" / "info" / "exclude").read_text()
    (project / ".env.example").write_text("mine\n")
    again = invoke("init", "-d", str(project))
    assert again.exit_code == 2 and ".env.example" in again.output
    assert (project / ".env.example").read_text() == "mine\n"


def test_check_reports_the_co_config_and_working_dir(project: Path, tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"monitoring": {"show_progress": True}}))
    result = CliRunner().invoke(cli, ["--config", str(bad), "check", "-d", str(project)])
    lines = lines_of(result)
    assert lines["co config"].startswith("problem")
    assert "$.monitoring" in lines["co config"] and "show_progress" in lines["co config"]
    assert lines["working dir"].startswith("ok")


def test_orchestrator_variables(project: Path, tmp_path: Path) -> None:
    env = {"ORCHESTRATOR_WORKING_DIR": str(project)}
    added = CliRunner().invoke(cli, ["add", "From the environment"], env=env)
    assert added.exit_code == 0, added.output
    listed = CliRunner().invoke(cli, ["list", "--json"], env=env)
    assert json.loads(listed.output)[0]["description"] == "From the environment"
    bad_level = CliRunner().invoke(cli, ["list"], env={**env, "ORCHESTRATOR_LOG_LEVEL": "LOUD"})
    assert bad_level.exit_code == 2 and "ORCHESTRATOR_LOG_LEVEL" in bad_level.output
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"execution": {"task_queue_timeout": 5}}))
    refused = CliRunner().invoke(cli, ["list"], env={**env, "ORCHESTRATOR_CONFIG": str(config)})
    assert refused.exit_code == 2
    assert "$.execution.task_queue_timeout" in refused.output
    missing = CliRunner().invoke(cli, ["list", "-d", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_the_documents_sample_config_loads(tmp_path: Path) -> None:
    from agent_team.co.settings import load_settings

    sample = {
        "models": {"manager": {"model": "claude-3-opus-20240229", "description": "Opus"},
                   "worker": {"model": "claude-3-5-sonnet-20241022", "description": "Sonnet"}},
        "execution": {"max_workers": 3, "worker_timeout": 1800, "manager_timeout": 300,
                      "task_queue_timeout": 1.0, "default_working_dir": None, "max_turns": None,
                      "max_retries": 3, "retry_base_delay": 1.0, "retry_max_delay": 60.0},
        "monitoring": {"progress_interval": 10, "verbose_logging": False,
                       "show_progress_bar": True, "enable_opus_review": True,
                       "usage_warning_threshold": 80, "check_usage_before_start": True},
        "claude_cli": {"command": "claude",
                       "flags": {"verbose": False, "dangerously_skip_permissions": False}},
        "notifications": {"slack": {"enabled": False, "webhook_url": None,
                                    "notify_on_completion": True, "notify_on_error": True}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(sample))
    settings = load_settings(path)
    overrides = settings.engine_overrides()
    assert overrides["agents"]["manager"]["model"] == "claude-3-opus-20240229"
    assert overrides["model"] == "claude-3-5-sonnet-20241022"
    assert overrides["retry"]["max_retries"] == 3
    assert overrides["coordination"]["check_interval_seconds"] == 10
    assert settings.slack.enabled is False
