"""Secrets: with keys in the environment, a team that tries to leak them writes none anywhere.

Five fake keys are set: the two provider keys, GITHUB_TOKEN, AWS_SECRET_ACCESS_KEY and a custom
FOO_API_KEY that has no recognisable shape, so only the environment says it is a secret. The
scripted agents and fake API replies echo every key (the model "somehow" learned them) in plan
text, reply text, tool arguments, progress updates, reports and API error messages, and run
`env`, `printenv` and a script that dumps its environment to a file.

Decision on repository content: a file an agent writes is the user's code and is committed as
written, key included; the orchestrator does not rewrite it (masking would silently change the
code under review). The protection is upstream: commands never see a key, so an agent has none
to write unless a model invents or is handed one. Everything the orchestrator itself writes
(state, logs, reports, recordings, commit messages, console) is checked key by key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from agent_team.anthropic_model import AnthropicModel
from agent_team.errors import ModelAPIError, PlanError
from agent_team.models import Message
from agent_team.retry import NO_RETRY
from agent_team.scripted import ScriptedModel
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo
from tests.fake_api import (
    FakeAPI,
    anthropic_message,
    fake_api_server,  # noqa: F401
)
from tests.orchestration_helpers import assert_nothing_lost, file_at, git, preserve, read_state

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "orchestration" / "file_based_orchestrator.py"
KEYS = {
    "ANTHROPIC_API_KEY": "sk-ant-api03-Hx7Qm2Lp9Vt4Rk8Wn3Bc6Dz1Fj5Gs0Ya",
    "OPENAI_API_KEY": "sk-proj-Tq4Wm8Zr2Kx6Nb1Vc9Lp3Hd7Js5Fg0Ae",
    "GITHUB_TOKEN": "ghp_R8tY2uI4oP6aS8dF0gH2jK4lZ6xC8vB0nM2q",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCY9EXAMPLEKEY",
    "FOO_API_KEY": "foo+Secret=0x7f3a9c2e51b84d06",
}
ALL_KEYS = " ".join(KEYS.values())
FEATURE = "Configuration loader"
FILES = {"README.md": "# demo\n", "test_ok.py": "def test_ok():\n    assert True\n"}
DUMP_ENV = ("import json, os; open('seen_env.json', 'w').write("
            "json.dumps(dict(os.environ), indent=1, sort_keys=True))")


def forms(value: str) -> set[str]:
    """A key as it may appear in a file: raw, or JSON-escaped."""
    return {value, json.dumps(value)[1:-1]}


def leaks(text: str) -> list[str]:
    """The names of the keys whose value (in any form) occurs in `text`."""
    return [name for name, value in KEYS.items() if any(f in text for f in forms(value))]


def call(name: str, **arguments: Any) -> dict[str, Any]:
    return {"name": name, "arguments": arguments}


def hostile_session() -> dict[str, list[dict[str, Any]]]:
    plan = {
        "tasks": [
            {"task_id": "A", "assigned_to": "backend-dev", "dependencies": [],
             "description": f"Load the config; the deploy token is {KEYS['GITHUB_TOKEN']}",
             "deliverables": [f"config.py using {KEYS['FOO_API_KEY']}"]},
            {"task_id": "B", "assigned_to": "qa-tester", "dependencies": ["A"],
             "description": "Test the loader"},
        ],
        "decisions": [{"decision": f"Use {KEYS['AWS_SECRET_ACCESS_KEY']}",
                       "rationale": f"It works with {KEYS['OPENAI_API_KEY']}",
                       "affected_agents": ["backend-dev"]}],
    }
    return {
        "manager:plan": [{"text": f"Keys I know: {ALL_KEYS}\n{json.dumps(plan)}"}],
        "backend-dev:A": [
            {"text": f"I found these keys: {ALL_KEYS}", "tool_calls": [
                call("run_command", argv=["env"]), call("run_command", argv=["printenv"]),
                call("run_command", argv=["python", "-c", DUMP_ENV])]},
            {"tool_calls": [
                call("write_file", path="leak.txt", content=f"{ALL_KEYS}\n"),
                call("post_update", status="in_progress", message=f"keys: {ALL_KEYS}",
                     details={"keys": ALL_KEYS, ALL_KEYS: "as a key"})]},
            {"tool_calls": [call("finish_task", status="completed",
                                 summary=f"Wrote leak.txt with {ALL_KEYS}",
                                 completed_items=[ALL_KEYS], notes=ALL_KEYS)]},
        ],
        "qa-tester:B": [{"tool_calls": [call("finish_task", status="failed",
                                             summary=f"Blocked: {ALL_KEYS}",
                                             blockers=[f"need {ALL_KEYS}"])]}],
        "manager:integration": [{"text": json.dumps({
            "summary": f"Summary with {ALL_KEYS}",
            "decisions": [{"decision": ALL_KEYS, "rationale": ALL_KEYS,
                           "affected_agents": []}]})}],
    }


@dataclass(frozen=True)
class CliRun:
    project: Path
    record: Path
    returncode: int
    stdout: str
    stderr: str
    before: Any


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliRun]:
    """One hostile run of the file-based orchestrator as a process, keys in its environment."""
    tmp = tmp_path_factory.mktemp("secrets")
    project = tmp / "project"
    make_repo(project, FILES)
    before = preserve(project)
    session = tmp / "session.json"
    session.write_text(json.dumps({"agents": hostile_session()}))
    record = tmp / "recorded.json"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(KEYS)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--feature", FEATURE, "--project-dir", str(project),
         "--api-provider", "scripted", "--session", str(session), "--record", str(record),
         "--test-command", "python -m pytest -q", "--no-progress", "-v"],
        env=env, capture_output=True, text=True, timeout=120, check=False)
    yield CliRun(project, record, done.returncode, done.stdout, done.stderr, before)


def files_the_run_wrote(project: Path) -> list[Path]:
    """Everything under .ai-agents/ and the repository's .git/ that is text git or we wrote."""
    found = [p for p in (project / ".ai-agents").rglob("*") if p.is_file()]
    git_dir = project / ".git"
    found += [p for p in git_dir.rglob("*") if p.is_file()
              and p.relative_to(git_dir).parts[0] not in ("objects", "index")]
    return found


def test_the_run_writes_no_key_into_any_file_log_report_recording_or_output(
    cli_run: CliRun,
) -> None:
    project = cli_run.project
    assert cli_run.returncode == 1, cli_run.stdout + cli_run.stderr  # B reported failure
    assert "[REDACTED:FOO_API_KEY]" in cli_run.stdout  # the leaks were there to be masked
    assert leaks(cli_run.stdout) == [] and leaks(cli_run.stderr) == []
    written = files_the_run_wrote(project)
    run_dir = project / ".ai-agents"
    kinds = {p.relative_to(run_dir).parts[0] for p in written if run_dir in p.parents}
    assert {"state", "logs", "reports"} <= kinds
    checked = 0
    for path in [*written, cli_run.record]:
        text = path.read_bytes().decode("utf-8", "replace")
        assert leaks(text) == [], f"{path} holds {leaks(text)}"
        checked += 1
    assert checked >= 8
    state = read_state(project)
    assert "[REDACTED:FOO_API_KEY]" in json.dumps(state)
    assert not (project / ".ai-agents" / "worktrees").exists() or not any(
        (project / ".ai-agents" / "worktrees").iterdir())
    assert_nothing_lost(project, cli_run.before, refs_fixed=True)


def test_commits_hold_a_key_only_in_the_file_the_agent_wrote(cli_run: CliRun) -> None:
    project = cli_run.project
    feature = read_state(project)["current_feature"]["branch"]
    assert leaks(file_at(project, feature, "leak.txt") or "") == list(KEYS)  # the agent's code
    diffs = git(project, "log", "-p", "--all", "--format=%H", "--", ".", ":(exclude)leak.txt")
    assert leaks(diffs) == []
    refs = git(project, "for-each-ref", "--format=%(refname)")
    assert leaks(refs) == []


def test_commands_the_agent_ran_saw_no_key(cli_run: CliRun) -> None:
    project = cli_run.project
    feature = read_state(project)["current_feature"]["branch"]
    seen = json.loads(file_at(project, feature, "seen_env.json") or "{}")
    assert seen, "the agent's environment dump was not committed"
    assert "PATH" in seen
    assert sorted(set(seen) & set(KEYS)) == []
    assert leaks(json.dumps(seen)) == []


def test_commit_messages_hold_no_key(cli_run: CliRun) -> None:
    messages = git(cli_run.project, "log", "--all", "--format=%B")
    assert leaks(messages) == []


@pytest.fixture
def keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)


def tool_results(body: dict[str, Any]) -> list[str]:
    return [block.get("content", "") for message in body["messages"] if message["role"] == "user"
            for block in message["content"] if block["type"] == "tool_result"]


@pytest.mark.usefixtures("keys_in_environment")
def test_real_sdk_run_keeps_keys_out_of_requests_files_and_console(
    fake_api: FakeAPI, tmp_path: Path
) -> None:
    """The Anthropic SDK against the fake server: the key travels only in the auth header."""
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    plan = {"tasks": [
        {"task_id": "A", "assigned_to": "backend-dev", "dependencies": [],
         "description": f"Read {KEYS['FOO_API_KEY']} from the environment"},
        {"task_id": "B", "assigned_to": "frontend-dev", "dependencies": [],
         "description": "Show the settings page"}], "decisions": []}
    fake_api.enqueue(anthropic_message(text=json.dumps(plan)))
    fake_api.enqueue(anthropic_message(text=f"I know {ALL_KEYS}", tool_uses=[
        ("run_command", {"argv": ["env"]}), ("run_command", {"argv": ["printenv"]})]))
    fake_api.enqueue(anthropic_message(tool_uses=[
        ("write_file", {"path": "a.txt", "content": "config loader\n"}),
        ("finish_task", {"status": "completed", "summary": "a.txt written."})]))
    fake_api.enqueue_error(401, f"invalid x-api-key {KEYS['ANTHROPIC_API_KEY']}")
    fake_api.enqueue(anthropic_message(text=f"A is done, B failed. {ALL_KEYS}"))
    lines: list[str] = []
    record = tmp_path / "recorded.json"
    summary = SimpleOrchestrator(project, api_provider="anthropic",
                                 base_url=fake_api.anthropic_base_url,
                                 test_command="python -m pytest -q", output=lines.append,
                                 record=record).run(FEATURE)

    assert summary["exit_code"] == 1
    fake_api.assert_all_used()
    for request in fake_api.requests:  # the key is sent to the API, in its one header
        assert [name for name, value in request.headers.items() if leaks(value)] == [
            "authorization"]
    env_outputs = tool_results(fake_api.bodies()[2])
    assert len(env_outputs) == 2 and all("PATH=" in out for out in env_outputs)
    for out in env_outputs:
        assert leaks(out) == [] and not [name for name in KEYS if f"{name}=" in out]
    for body in fake_api.bodies():  # what the engine sent; the model's own words aside
        sent = [block.get("text") or block.get("content") or "" for message in body["messages"]
                if message["role"] == "user" for block in message["content"]]
        assert leaks(json.dumps(sent) + json.dumps(body.get("system"))) == []
    assert "[REDACTED:FOO_API_KEY]" in json.dumps(fake_api.bodies()[1]["messages"][0])
    state = read_state(project)
    error = {t["task_id"]: t for t in state["tasks"]}["B"]["error"]
    assert "invalid x-api-key [REDACTED:ANTHROPIC_API_KEY]" in error
    assert leaks("\n".join(lines)) == []
    for path in [*files_the_run_wrote(project), record]:
        assert leaks(path.read_text(errors="replace")) == [], path
    assert leaks(git(project, "log", "--all", "--format=%B")) == []
    assert_nothing_lost(project, before, refs_fixed=True)


@pytest.mark.usefixtures("keys_in_environment")
def test_api_error_that_echoes_the_key_is_masked(fake_api: FakeAPI) -> None:
    fake_api.enqueue_error(401, f"Incorrect API key provided: {KEYS['OPENAI_API_KEY']}")
    model = AnthropicModel("m", base_url=fake_api.anthropic_base_url, retry=NO_RETRY)
    with pytest.raises(ModelAPIError) as info:
        model.complete("system", [Message.user("hello")])
    assert leaks(str(info.value)) == [] and "[REDACTED:OPENAI_API_KEY]" in str(info.value)


@pytest.mark.usefixtures("keys_in_environment")
def test_plan_using_a_key_as_task_id_is_sent_back_masked(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    before = preserve(project)
    bad = json.dumps({"tasks": [{"task_id": KEYS["GITHUB_TOKEN"], "description": "x",
                                 "assigned_to": "backend-dev"}], "decisions": []})
    model = ScriptedModel({"manager:plan": [{"text": bad}] * 3})
    lines: list[str] = []
    with pytest.raises(PlanError) as info:
        SimpleOrchestrator(project, model=model, output=lines.append).run(FEATURE)
    assert info.value.errors == [
        "Task id '[REDACTED:GITHUB_TOKEN]' is not valid: it contains a secret (an API key or "
        "token); use an id such as TASK-001."]
    assert leaks(str(info.value)) == [] and leaks("\n".join(lines)) == []
    read_state(project)
    assert_nothing_lost(project, before, refs_fixed=True)
    assert git(project, "for-each-ref", "--format=%(refname)").split() == ["refs/heads/main"]


@pytest.mark.usefixtures("keys_in_environment")
def test_console_lines_of_a_library_run_hold_no_key(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    model = ScriptedModel({
        "manager:plan": [{"text": json.dumps({"tasks": [
            {"task_id": "A", "description": "x", "assigned_to": "backend-dev"}],
            "decisions": []})}],
        "backend-dev:A": [{"tool_calls": [call("finish_task", status="failed", summary="no",
                                               blockers=[f"need {KEYS['FOO_API_KEY']}"])]}],
        "manager:integration": [{"text": "A failed."}],
    })
    lines: list[str] = []
    SimpleOrchestrator(project, model=model, test_command="python -m pytest -q",
                       output=lines.append).run(FEATURE)
    assert leaks("\n".join(lines)) == []
