"""Run control end to end: budgets, task retries, resume (also after SIGKILL), real usage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import git
import pytest
from agent_team.errors import ConfigError, StateError
from agent_team.scripted import ScriptedModel
from agent_team.state import TeamState
from click.testing import CliRunner
from file_based_orchestrator import FileBasedOrchestrator, main
from simple_orchestrator import SimpleOrchestrator

from tests.conftest import make_repo
from tests.fake_api import anthropic_message, fake_api_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "orchestration" / "file_based_orchestrator.py"
FEATURE = "Greeting module"
FILES = {
    "README.md": "# demo\n",
    "test_smoke.py": "def test_smoke():\n    assert True\n",
}


def plan(*tasks: tuple[str, str, list[str]]) -> dict[str, Any]:
    return {"text": json.dumps({
        "tasks": [{"task_id": t, "description": f"Write {t.lower()}.txt", "assigned_to": role,
                   "dependencies": deps} for t, role, deps in tasks],
        "decisions": [],
    })}


def writer(task_id: str, *, delay: float = 0.0, usage: dict[str, int] | None = None) -> list:
    """An agent that writes <task>.txt in one turn and finishes in the next."""
    extra = {"usage": usage} if usage else {}
    return [
        {"tool_calls": [{"name": "write_file", "arguments": {
            "path": f"{task_id.lower()}.txt", "content": f"made by {task_id}\n"}}],
         "delay": delay, **extra},
        {"tool_calls": [{"name": "finish_task", "arguments": {
            "status": "completed", "summary": f"{task_id} written."}}], "delay": delay, **extra},
    ]


CHAIN = plan(("A", "backend-dev", []), ("B", "frontend-dev", ["A"]), ("C", "qa-tester", ["B"]))
INTEGRATION = {"text": json.dumps({"summary": "All three files exist.", "decisions": []})}


def chain_session(delay: float = 0.0, usage: dict[str, int] | None = None) -> dict[str, list]:
    return {
        "manager:plan": [CHAIN],
        "backend-dev:A": writer("A", delay=delay, usage=usage),
        "frontend-dev:B": writer("B", delay=delay, usage=usage),
        "qa-tester:C": writer("C", delay=delay, usage=usage),
        "manager:integration": [INTEGRATION],
    }


def orchestrator(project: Path, model: ScriptedModel, **kwargs: Any) -> FileBasedOrchestrator:
    return FileBasedOrchestrator(project, model=model, test_command="python -m pytest -q",
                                 output=lambda _: None, **kwargs)


def invoke_cli(tmp_path: Path, project: Path, *extra: str) -> Any:
    """file_based_orchestrator.py's CLI on the three-task chain, replayed offline."""
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"agents": chain_session()}))
    return CliRunner().invoke(main, [
        "--feature", FEATURE, "--project-dir", str(project), "--api-provider", "scripted",
        "--session", str(session), "--test-command", "python -m pytest -q", *extra,
    ], catch_exceptions=False)


def tree(project: Path, ref: str) -> str:
    return git.Repo(project).git.rev_parse(f"{ref}^{{tree}}")


def feature_tree_of_uninterrupted_run(tmp_path: Path) -> str:
    project = tmp_path / "reference"
    make_repo(project, FILES)
    summary = orchestrator(project, ScriptedModel(chain_session())).run(FEATURE)
    assert summary["exit_code"] == 0
    return tree(project, summary["feature_branch"])


def test_api_call_budget_stops_with_exit_3_and_loses_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    summary = orchestrator(project, ScriptedModel(chain_session()),
                           limits={"max_api_calls": 4}).run(FEATURE)

    assert summary["exit_code"] == 3 and summary["status"] == "stopped"
    state = TeamState.for_project(project).read()
    feature = state["current_feature"]
    assert feature["status"] == "stopped" and "max_api_calls" in feature["stop_reason"]
    assert state["usage"]["api_calls"] == 4
    tasks = {t["task_id"]: t for t in state["tasks"]}
    assert tasks["A"]["status"] == "completed" and tasks["A"]["merged"]
    # B was stopped at its second turn: its first turn's file is committed on its branch.
    assert tasks["B"]["status"] == "pending" and tasks["B"]["commit"]
    repo = git.Repo(project)
    branch_b = f"{summary['feature_branch']}-agents/frontend-dev/B"
    assert repo.git.show(f"{branch_b}:b.txt") == "made by B"
    assert tasks["C"]["status"] == "pending" and "stopped" in tasks["C"]["error"]
    assert Path(project, ".ai-agents", "reports", f"{summary['run_id']}.md").is_file()
    assert not [w for w in repo.git.worktree("list").splitlines()[1:]]


def test_budget_stop_via_cli_exits_3(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    result = invoke_cli(tmp_path, project, "--max-api-calls", "2")
    assert result.exit_code == 3, result.output
    assert "Budget reached (max_api_calls)" in result.output


def test_token_budget_counts_the_providers_numbers(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    usage = {"input_tokens": 1000, "output_tokens": 200, "cache_read_tokens": 300}
    summary = orchestrator(project, ScriptedModel(chain_session(usage=usage)),
                           limits={"token_budget": 3200}).run(FEATURE)
    assert summary["exit_code"] == 3
    state = TeamState.for_project(project).read()
    # Two turns of 1,500 tokens are spent; the third request's own input (its system prompt
    # alone is far more than 200 tokens) would pass 3,200, so it is refused before it is sent.
    assert state["usage"]["input_tokens"] == 2000
    assert "token_budget" in state["current_feature"]["stop_reason"]


def test_cost_limit_without_a_price_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    runner = FileBasedOrchestrator(project, api_provider="openai", model_name="mystery-model",
                                   limits={"cost_limit_usd": 5}, output=lambda _: None)
    with pytest.raises(ConfigError, match="mystery-model.*no price"):
        runner.run(FEATURE)
    assert not (project / ".ai-agents" / "state" / "team-communication.json").exists()


def test_failed_attempt_is_retried_with_the_error_in_the_prompt(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"coordination": {"max_task_attempts": 2}}))
    session = chain_session()
    session["backend-dev:A"] = [
        {"tool_calls": [{"name": "finish_task", "arguments": {
            "status": "failed", "summary": "Could not find the output directory."}}]},
        *writer("A"),
    ]
    model = ScriptedModel(session)
    summary = FileBasedOrchestrator(project, model=model, config_path=config,
                                    test_command="python -m pytest -q",
                                    output=lambda _: None).run(FEATURE)
    assert summary["exit_code"] == 0
    prompts = [c.messages[0].content for c in model.calls if c.key == "backend-dev:A"]
    assert "A previous attempt failed: Could not find the output directory." in prompts[1]
    state = TeamState.for_project(project).read()
    assert next(t for t in state["tasks"] if t["task_id"] == "A")["attempts"] == 2


def test_resume_after_budget_stop_reaches_the_same_tree(tmp_path: Path) -> None:
    expected = feature_tree_of_uninterrupted_run(tmp_path)
    project = tmp_path / "project"
    make_repo(project, FILES)
    first = orchestrator(project, ScriptedModel(chain_session()),
                         limits={"max_api_calls": 4}).run(FEATURE)
    assert first["exit_code"] == 3

    model = ScriptedModel(chain_session())
    second = orchestrator(project, model).resume()
    assert second["exit_code"] == 0
    assert tree(project, second["feature_branch"]) == expected
    keys = {c.key for c in model.calls}
    assert "backend-dev:A" not in keys and "manager:plan" not in keys  # done work not redone
    state = TeamState.for_project(project).read()
    assert state["usage"]["api_calls"] == 4 + 2 + 2 + 1  # budgets count the earlier spend
    assert [r["status"] for r in state["runs"]] == ["stopped", "completed"]


def test_resume_counts_earlier_spending_against_the_budget(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    orchestrator(project, ScriptedModel(chain_session()), limits={"max_api_calls": 4}).run(
        FEATURE)
    again = orchestrator(project, ScriptedModel(chain_session()),
                         limits={"max_api_calls": 5}).resume()
    assert again["exit_code"] == 3
    assert TeamState.for_project(project).read()["usage"]["api_calls"] == 5


def test_resume_without_a_recorded_feature_is_a_user_error(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    with pytest.raises(ConfigError, match="Nothing to resume"):
        orchestrator(project, ScriptedModel({})).resume()


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_reaches_the_same_tree(tmp_path: Path) -> None:
    expected = feature_tree_of_uninterrupted_run(tmp_path)
    project = tmp_path / "project"
    make_repo(project, FILES)
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"agents": chain_session(delay=0.4)}))
    args = [sys.executable, str(SCRIPT), "--project-dir", str(project), "--api-provider",
            "scripted", "--session", str(session), "--test-command", "python -m pytest -q"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = subprocess.Popen([*args, "--feature", FEATURE], env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state_path = project / ".ai-agents" / "state" / "team-communication.json"
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            statuses = {}
            if state_path.exists():
                try:  # the file and the run's journal, merged
                    state = TeamState(state_path).read()
                    statuses = {t["task_id"]: t["status"] for t in state["tasks"]}
                except (StateError, KeyError):
                    pass
            if statuses.get("A") == "completed" and statuses.get("B") == "in_progress":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never reached the point to kill it")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    TeamState(state_path).read()  # the state file survived the kill intact
    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    branch = TeamState(state_path).read()["current_feature"]["branch"]
    assert tree(project, branch) == expected
    assert "Pruned" in resumed.stdout or "Resuming" in resumed.stdout


def test_summary_tokens_equal_what_the_api_reported(
    tmp_path: Path, fake_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real anthropic SDK against a loopback server, including a 429 with retry-after."""
    project = tmp_path / "project"
    make_repo(project, FILES)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-real")
    usages = [
        {"input_tokens": 1200, "output_tokens": 300, "cache_creation_input_tokens": 900},
        {"input_tokens": 150, "output_tokens": 80, "cache_read_input_tokens": 2000},
        {"input_tokens": 210, "output_tokens": 40, "cache_read_input_tokens": 2100},
        {"input_tokens": 400, "output_tokens": 120},
    ]
    model = "claude-sonnet-5-5"
    fake_api.enqueue(anthropic_message(text=plan(("T1", "backend-dev", []))["text"],
                                       usage=usages[0], model=model))
    fake_api.enqueue_error(429, "rate limited", headers={"retry-after": "0.2"})
    fake_api.enqueue(anthropic_message(tool_uses=[("write_file", {
        "path": "t1.txt", "content": "hello\n"})], usage=usages[1], model=model))
    fake_api.enqueue(anthropic_message(tool_uses=[("finish_task", {
        "status": "completed", "summary": "t1.txt written."})], usage=usages[2], model=model))
    fake_api.enqueue(anthropic_message(text="T1 added t1.txt; tests pass.", usage=usages[3],
                                       model=model))
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"retry": {"base_delay_seconds": 0.01,
                                            "retry_after_ceiling_seconds": 5}}))
    lines: list[str] = []
    started = time.monotonic()
    summary = SimpleOrchestrator(
        project, api_provider="anthropic", model_name=model,
        base_url=fake_api.anthropic_base_url, config_path=config,
        test_command="python -m pytest -q", output=lines.append,
    ).run(FEATURE)

    assert summary["exit_code"] == 0
    assert time.monotonic() - started >= 0.2  # the retry waited as the server asked
    assert any("retry 1" in line for line in lines)
    fake_api.assert_all_used()
    assert summary["api_calls"] == 4
    assert summary["tokens"] == {
        "input": sum(u["input_tokens"] for u in usages),
        "output": sum(u["output_tokens"] for u in usages),
        "cache_read": sum(u.get("cache_read_input_tokens", 0) for u in usages),
        "cache_write": sum(u.get("cache_creation_input_tokens", 0) for u in usages),
    }
    prices = {"input": 2.0, "output": 10.0, "cache_read": 0.1, "cache_write": 2.5}
    expected_cost = sum(
        u["input_tokens"] * prices["input"] + u["output_tokens"] * prices["output"]
        + u.get("cache_read_input_tokens", 0) * prices["cache_read"]
        + u.get("cache_creation_input_tokens", 0) * prices["cache_write"]
        for u in usages) / 1_000_000
    assert summary["cost_usd"] == pytest.approx(expected_cost)
    assert "sk-ant-test-not-real" not in (project / ".ai-agents" / "state" /
                                          "team-communication.json").read_text()


def looping(times: int) -> list[dict[str, Any]]:
    return [{"tool_calls": [{"name": "read_file", "arguments": {"path": "README.md"}}]}
            for _ in range(times)]


def test_looping_agent_is_nudged_escalated_and_retried_with_guidance(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    session = chain_session()
    # 3 identical calls -> nudge; 3 more -> escalate; then the retry (guided) does the work.
    session["backend-dev:A"] = looping(6) + writer("A")
    session["manager:guidance-A"] = [{"text": "Stop re-reading README.md; write a.txt now."}]
    model = ScriptedModel(session)
    summary = orchestrator(project, model).run(FEATURE)

    assert summary["exit_code"] == 0
    calls = [c for c in model.calls if c.key == "backend-dev:A"]
    nudged = calls[3].messages[-1].content
    assert "stuck" in nudged.lower() and "read_file" in nudged
    assert "Guidance: Stop re-reading README.md" in calls[6].messages[0].content
    updates = [u["status"] for u in TeamState.for_project(project).read()["agent_updates"]]
    assert updates.index("stuck_nudge") < updates.index("stuck_escalate") < updates.index(
        "stuck_guidance_requested")


def test_agent_stuck_again_after_guidance_fails_its_task_with_the_reason(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    session = chain_session()
    session["backend-dev:A"] = looping(12)
    session["manager:guidance-A"] = [{"text": "Try writing the file."}]
    summary = orchestrator(project, ScriptedModel(session)).run(FEATURE)

    assert summary["exit_code"] == 1
    tasks = {t["task_id"]: t for t in TeamState.for_project(project).read()["tasks"]}
    assert tasks["A"]["status"] == "failed"
    assert "got stuck again after the manager's guidance" in tasks["A"]["error"]
    assert "read_file" in tasks["A"]["error"]
    assert tasks["B"]["status"] == "blocked" and tasks["C"]["status"] == "blocked"


def enqueue_simple_run(fake_api: Any, model: str) -> None:
    fake_api.enqueue(anthropic_message(text=plan(("T1", "backend-dev", []))["text"],
                                       model=model))
    fake_api.enqueue(anthropic_message(tool_uses=[("write_file", {
        "path": "t1.txt", "content": "hello\n"})], model=model))
    fake_api.enqueue(anthropic_message(tool_uses=[("finish_task", {
        "status": "completed", "summary": "t1.txt written."})], model=model))
    fake_api.enqueue(anthropic_message(text="T1 added t1.txt.", model=model))


def test_record_then_replay_reaches_the_same_tree_and_writes_no_key(
    tmp_path: Path, fake_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-ant-api03-recording-test-not-real-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    enqueue_simple_run(fake_api, "claude-sonnet-5-5")
    recorded = tmp_path / "recorded"
    make_repo(recorded, FILES)
    session = tmp_path / "session.json"
    first = SimpleOrchestrator(
        recorded, api_provider="anthropic", base_url=fake_api.anthropic_base_url,
        test_command="python -m pytest -q", output=lambda _: None, record=session,
    ).run(FEATURE)
    assert first["exit_code"] == 0
    text = session.read_text()
    assert key not in text and "authorization" not in text.lower()

    monkeypatch.delenv("ANTHROPIC_API_KEY")
    replayed = tmp_path / "replayed"
    make_repo(replayed, FILES)
    second = SimpleOrchestrator(
        replayed, api_provider="scripted", session=session,
        test_command="python -m pytest -q", output=lambda _: None,
    ).run(FEATURE)
    assert second["exit_code"] == 0
    assert tree(replayed, second["feature_branch"]) == tree(recorded, first["feature_branch"])


def test_event_log_has_one_event_per_call_commit_merge_and_state_change(
    tmp_path: Path,
) -> None:
    from agent_team.events import read_events

    project = tmp_path / "project"
    make_repo(project, FILES)
    summary = orchestrator(project, ScriptedModel(chain_session())).run(FEATURE)
    events = read_events(project / ".ai-agents" / "logs" / f"{summary['run_id']}.jsonl")
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "run_started" and kinds[-1] == "run_finished"
    assert kinds.count("model_call") == summary["api_calls"] == 8
    assert kinds.count("tool_call") == 6 and kinds.count("commit") == 3
    assert kinds.count("merge") == 3 and "test_run" in kinds
    statuses = [(e["task_id"], e["status"]) for e in events if e["kind"] == "task_status"]
    assert statuses.count(("A", "completed")) == 1
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)


def test_verbose_plain_output_shows_tool_calls(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    result = invoke_cli(tmp_path, project, "--no-progress", "-v")
    assert result.exit_code == 0, result.output
    assert "write_file" in result.output and "\x1b[" not in result.output


def test_resume_records_a_merge_that_git_made_but_the_state_missed(tmp_path: Path) -> None:
    """A crash between the merge commit and its state record: resume finds it in git."""
    project = tmp_path / "project"
    make_repo(project, FILES)
    first = orchestrator(project, ScriptedModel(chain_session()),
                         limits={"max_api_calls": 4}).run(FEATURE)
    assert first["exit_code"] == 3
    state = TeamState.for_project(project)

    def forget_merge_of_a(data: dict[str, Any]) -> None:
        task = next(t for t in data["tasks"] if t["task_id"] == "A")
        task.update(status="in_progress", merged=False, merge_commit=None)
        data["integration"]["merges"] = [
            m for m in data["integration"]["merges"] if m["task_id"] != "A"]

    state.update(forget_merge_of_a)
    model = ScriptedModel(chain_session())
    resumed = orchestrator(project, model).resume()

    assert resumed["exit_code"] == 0
    assert "backend-dev:A" not in {c.key for c in model.calls}  # not redone, not re-merged
    merges = {m["task_id"]: m for m in state.read()["integration"]["merges"]}
    assert set(merges) == {"A", "B", "C"}
    assert merges["A"]["message"] == "merged before the run was interrupted"
    merge_commit = merges["A"]["commit"]
    assert git.Repo(project).commit(merge_commit).message.startswith("Merge A")


@pytest.mark.slow
def test_ctrl_c_stops_at_the_next_turn_keeps_the_work_and_resumes(tmp_path: Path) -> None:
    expected = feature_tree_of_uninterrupted_run(tmp_path)
    project = tmp_path / "project"
    make_repo(project, FILES)
    session = tmp_path / "session.json"
    agents = chain_session(delay=0.6)
    # B: write, then a slow look around (the interrupt lands here), then finish.
    agents["frontend-dev:B"].insert(1, {"tool_calls": [{"name": "list_files", "arguments": {}}],
                                        "delay": 1.5})
    session.write_text(json.dumps({"agents": agents}))
    args = [sys.executable, str(SCRIPT), "--project-dir", str(project), "--api-provider",
            "scripted", "--session", str(session), "--test-command", "python -m pytest -q",
            "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    process = subprocess.Popen([*args, "--feature", FEATURE], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    state_path = project / ".ai-agents" / "state" / "team-communication.json"
    branch_b = "feature/greeting-module-agents/frontend-dev/B"
    deadline = time.monotonic() + 60
    while not (project / ".ai-agents" / "worktrees" / "greeting-module" / "tasks" / "B"
               / "b.txt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "B never started"
        time.sleep(0.02)
    time.sleep(0.3)  # inside B's second turn
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)

    assert process.returncode == 130, output
    assert "Press Ctrl-C again to abort at once" in output
    state = TeamState(state_path).read()
    assert state["current_feature"]["status"] == "stopped"
    tasks = {t["task_id"]: t for t in state["tasks"]}
    assert tasks["A"]["status"] == "completed" and tasks["B"]["status"] == "pending"
    assert git.Repo(project).git.show(f"{branch_b}:b.txt") == "made by B"
    resumed = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert tree(project, state["current_feature"]["branch"]) == expected


def test_resume_rebuilds_the_run_from_its_stored_settings(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repo(project, FILES)
    session = tmp_path / "session.json"
    session.write_text(json.dumps({"agents": chain_session()}))
    seven = "python -c \"print('7 passed, 0 failed')\""
    first = CliRunner().invoke(main, [
        "--feature", FEATURE, "--project-dir", str(project), "--api-provider", "scripted",
        "--session", str(session), "--test-command", seven, "--max-api-calls", "4",
        "--max-iterations", "9", "--no-progress",
    ], catch_exceptions=False)
    assert first.exit_code == 3, first.output
    stored = TeamState.for_project(project).read()["runs"][0]["settings"]
    assert stored["test_command"] == seven and stored["limits"]["max_api_calls"] == 4

    # No provider, session or test command given: the run is rebuilt from what it stored;
    # the one flag given (a higher budget) wins over the stored value.
    second = CliRunner().invoke(main, ["--resume", "--project-dir", str(project),
                                       "--max-api-calls", "50", "--no-progress"],
                                catch_exceptions=False)

    assert second.exit_code == 0, second.output
    state = TeamState.for_project(project).read()
    assert state["integration"]["test_results"]["passed"] == 7
    rebuilt = state["runs"][-1]["settings"]
    assert rebuilt["test_command"] == seven and rebuilt["api_provider"] == "scripted"
    assert rebuilt["limits"]["max_api_calls"] == 50
    assert rebuilt["coordination"]["max_iterations"] == 9
