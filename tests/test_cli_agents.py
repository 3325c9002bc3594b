"""Coding-agent CLI workers, piece by piece: output parsers on the CLIs' real formats, the
argument lists, the config, credentials, process control and the pre-flight check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_team.cli_agents import aider, claude_code, codex, generic, preflight
from agent_team.cli_agents.runner import Invocation, cli_environment, run_invocation
from agent_team.cli_agents.spec import CliRequest, WorkerSpec, worker_spec
from agent_team.config import build_config
from agent_team.errors import ConfigError
from agent_team.models import Usage

from tests.cli_fakes import install_fakes, markers
from tests.conftest import make_repo, wait_until_gone

TEAM_PY = Path(__file__).resolve().parents[1] / "scripts" / "orchestration" / "co.py"

CLAUDE_RESULT = {
    "type": "result", "subtype": "success", "is_error": False, "duration_ms": 15234,
    "duration_api_ms": 14120, "num_turns": 6, "result": "Added the login endpoint.",
    "session_id": "0f3c2a9e-8d1b-4c55-9a51-3f8e2b1c7d40", "total_cost_usd": 0.1834,
    "usage": {"input_tokens": 27, "cache_creation_input_tokens": 8120,
              "cache_read_input_tokens": 60211, "output_tokens": 1466,
              "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"},
    "modelUsage": {}, "permission_denials": [], "uuid": "5d0c6d0e-8c51-4c3e-a1fd-d5f0c0b7f3a1",
}


def request(tmp_path: Path, **fields: Any) -> CliRequest:
    return CliRequest(prompt="Task: T1 - do it", workdir=tmp_path, scratch=tmp_path, **fields)


# -- parsers -----------------------------------------------------------------------------------


def test_claude_result_object_gives_every_figure() -> None:
    report = claude_code.parse(json.dumps(CLAUDE_RESULT), "", 0)
    assert not report.is_error and report.error is None
    assert report.text == "Added the login endpoint."
    assert report.turns == 6 and report.api_calls == 6
    assert report.session_id == CLAUDE_RESULT["session_id"]
    assert report.usage == Usage(27, 1466, 60211, 8120)
    assert report.cost_usd == pytest.approx(0.1834)


def test_claude_verbose_array_and_legacy_cost_field() -> None:
    legacy = {k: v for k, v in CLAUDE_RESULT.items() if k != "total_cost_usd"}
    legacy["cost_usd"] = 0.05
    stream = [{"type": "system", "subtype": "init", "session_id": "s"},
              {"type": "assistant", "message": {"content": []}}, legacy]
    report = claude_code.parse(json.dumps(stream), "", 0)
    assert report.cost_usd == pytest.approx(0.05) and report.turns == 6


@pytest.mark.parametrize("change, phrase", [
    ({"subtype": "error_max_turns", "is_error": False, "errors": ["Reached maximum turns"]},
     "error_max_turns: Reached maximum turns"),
    ({"is_error": True, "result": "API Error: 401 invalid x-api-key"}, "401 invalid x-api-key"),
])
def test_claude_error_results_are_errors(change: dict[str, Any], phrase: str) -> None:
    result = {**CLAUDE_RESULT, **change}
    if "errors" in change:
        del result["result"]
    report = claude_code.parse(json.dumps(result), "", 1)
    assert report.is_error and phrase in (report.error or "")


def test_claude_without_a_result_is_an_error_with_its_stderr() -> None:
    report = claude_code.parse("", "Error: Invalid API key · Please run /login", 1)
    assert report.is_error and "Invalid API key" in (report.error or "")
    assert report.cost_usd is None and not report.usage_known


def test_claude_cost_missing_is_unknown_not_zero() -> None:
    result = {k: v for k, v in CLAUDE_RESULT.items() if k != "total_cost_usd"}
    assert claude_code.parse(json.dumps(result), "", 0).cost_usd is None


CODEX_EVENTS = [
    {"type": "thread.started", "thread_id": "019a2d7a-41c4-78b1-b7cc-a45d62a89cd5"},
    {"type": "turn.started"},
    {"type": "item.completed", "item": {"id": "item_0", "type": "reasoning", "text": "**Plan**"}},
    {"type": "item.completed", "item": {"id": "item_1", "type": "command_execution",
                                        "command": "bash -lc ls", "aggregated_output": "a\n",
                                        "exit_code": 0, "status": "completed"}},
    {"type": "item.completed", "item": {"id": "item_2", "type": "agent_message",
                                        "text": "Edited api.py."}},
    {"type": "turn.completed", "usage": {"input_tokens": 2946, "cached_input_tokens": 1000,
                                         "output_tokens": 7}},
    {"type": "turn.completed", "usage": {"input_tokens": 100, "cached_input_tokens": 0,
                                         "output_tokens": 3}},
]


def test_codex_events_give_thread_usage_and_unknown_cost() -> None:
    stdout = "\n".join(json.dumps(e) for e in CODEX_EVENTS) + "\nnot json\n"
    report = codex.parse(stdout, "", 0)
    assert report.session_id == "019a2d7a-41c4-78b1-b7cc-a45d62a89cd5"
    assert report.usage == Usage(2046, 10, 1000, 0)
    assert report.turns == 2 and report.text == "Edited api.py."
    assert report.cost_usd is None and not report.is_error


def test_codex_turn_failed_is_an_error_with_its_message() -> None:
    events = CODEX_EVENTS[:2] + [{"type": "error", "message": "stream disconnected"},
                                 {"type": "turn.failed",
                                  "error": {"message": "stream disconnected"}}]
    report = codex.parse("\n".join(json.dumps(e) for e in events), "", 1)
    assert report.is_error and "stream disconnected" in (report.error or "")


def test_aider_usage_lines_are_summed_and_the_session_cost_kept() -> None:
    out = ("Aider v0.86.1\nApplied edit to api.py\n"
           "Tokens: 2.3k sent, 1.1k cache write, 512 received. Cost: $0.01 message, "
           "$0.01 session.\n"
           "Tokens: 12k sent, 4.0k cache write, 9.5k cache hit, 1,024 received.\n"
           "Cost: $0.0042 message, $0.0142 session.\n")
    report = aider.parse(out, "", 0)
    assert report.usage == Usage(1200 + 8000, 512 + 1024, 9500, 1100 + 4000)
    assert report.cost_usd == pytest.approx(0.0142)
    assert report.api_calls == 2 and not report.is_error


def test_aider_without_a_cost_line_has_unknown_cost_and_errors_are_found() -> None:
    assert aider.parse("Tokens: 900 sent, 80 received.\n", "", 0).cost_usd is None
    failed = aider.parse("litellm.AuthenticationError: OpenAIException - invalid key\n", "", 0)
    assert failed.is_error and "AuthenticationError" in (failed.error or "")
    assert aider.parse("", "Traceback", 2).is_error


# -- argument lists ----------------------------------------------------------------------------


def test_claude_arguments(tmp_path: Path) -> None:
    spec = WorkerSpec("claude-code", "backend-dev", model="claude-sonnet-5-5", max_turns=12)
    argv = claude_code.build(spec, ["/bin/claude"], request(tmp_path, session_id="S"))
    assert argv[:3] == ["/bin/claude", "-p", "Task: T1 - do it"]
    assert argv[argv.index("--output-format") + 1] == "json"
    assert argv[argv.index("--max-turns") + 1] == "12"
    assert argv[argv.index("--model") + 1] == "claude-sonnet-5-5"
    assert argv[argv.index("--session-id") + 1] == "S"
    assert "--dangerously-skip-permissions" not in argv
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    skip = WorkerSpec("claude-code", "r", skip_permissions=True)
    resumed = claude_code.build(skip, ["claude"], request(tmp_path, resume_id="S"))
    assert "--dangerously-skip-permissions" in resumed and "--permission-mode" not in resumed
    assert resumed[resumed.index("--resume") + 1] == "S" and "--session-id" not in resumed


def test_codex_and_aider_arguments(tmp_path: Path) -> None:
    spec = WorkerSpec("codex", "r", model="gpt-6.1-sol")
    argv = codex.build(spec, ["codex"], request(tmp_path))
    assert argv[:3] == ["codex", "exec", "--json"] and argv[-1] == "Task: T1 - do it"
    assert argv[argv.index("--model") + 1] == "gpt-6.1-sol"
    resumed = codex.build(spec, ["codex"], request(tmp_path, resume_id="th-1"))
    assert resumed[-3:] == ["resume", "th-1", "Task: T1 - do it"] and "--json" in resumed
    argv = aider.build(WorkerSpec("aider", "r", model="gpt-4.1"), ["aider"], request(tmp_path))
    assert argv[argv.index("--message") + 1] == "Task: T1 - do it"
    for flag in ("--yes-always", "--no-auto-commits", "--no-dirty-commits", "--no-gitignore"):
        assert flag in argv
    assert argv[argv.index("--chat-history-file") + 1].startswith(str(tmp_path))


def test_generic_template_fills_placeholders_and_leaves_other_braces(tmp_path: Path) -> None:
    template = ("agent", "--task={prompt}", "--file", "{prompt_file}", "-m", "{model}",
                "--dir", "{workdir}", '{"json": true}')
    spec = WorkerSpec("command", "r", command=template, model="m1")
    argv = generic.build(spec, ["/usr/bin/agent", *template[1:]], request(tmp_path))
    assert argv == ["/usr/bin/agent", "--task=Task: T1 - do it", "--file",
                    str(tmp_path / "prompt.md"), "-m", "m1", "--dir", str(tmp_path),
                    '{"json": true}']
    assert (tmp_path / "prompt.md").read_text() == "Task: T1 - do it"


# -- config ------------------------------------------------------------------------------------


def test_worker_config_and_both_reference_keys(tmp_path: Path) -> None:
    config = {"agents": {"backend-dev": {"worker": "claude-code", "model": "claude-opus-5-5"},
                         "frontend-dev": {"worker": {"type": "codex", "timeout_seconds": 60}},
                         "qa-tester": {"worker": "builtin"}},
              "claude_cli": {"command": "/opt/claude/bin/claude",
                             "flags": {"verbose": False, "dangerously_skip_permissions": True}},
              "orchestrator": {"claude_command": "/elsewhere/claude"}}
    path = tmp_path / "orchestrator-config.json"
    path.write_text(json.dumps(config))
    data = build_config(config_path=path).data
    claude = worker_spec(data, "backend-dev")
    assert claude is not None and claude.command == ("/opt/claude/bin/claude",)
    assert claude.skip_permissions and claude.model == "claude-opus-5-5"
    codex_spec = worker_spec(data, "frontend-dev")
    assert codex_spec is not None and codex_spec.timeout_seconds == 60
    assert worker_spec(data, "qa-tester") is None
    del data["claude_cli"]
    only_portable = worker_spec(data, "backend-dev")
    assert only_portable is not None and only_portable.command == ("/elsewhere/claude",)


@pytest.mark.parametrize("worker", ["cursor", {"type": "codex", "colour": "red"},
                                    {"command": []}])
def test_bad_worker_entries_are_refused_with_the_path(tmp_path: Path, worker: Any) -> None:
    path = tmp_path / "orchestrator-config.json"
    path.write_text(json.dumps({"agents": {"backend-dev": {"worker": worker}}}))
    with pytest.raises(ConfigError, match=r"agents\.backend-dev\.worker"):
        build_config(config_path=path)


# -- credentials and processes -----------------------------------------------------------------


def test_each_cli_gets_only_its_own_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-0123456789abcdef")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef0123")
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_" + "a" * 36)
    claude_env = cli_environment(claude_code.BACKEND.credentials(WorkerSpec("claude-code", "r")))
    codex_env = cli_environment(codex.BACKEND.credentials(WorkerSpec("codex", "r")))
    aider_env = cli_environment(aider.credentials(WorkerSpec("aider", "r", provider="anthropic")))
    assert "ANTHROPIC_API_KEY" in claude_env and "OPENAI_API_KEY" not in claude_env
    assert "OPENAI_API_KEY" in codex_env and "ANTHROPIC_API_KEY" not in codex_env
    assert "ANTHROPIC_API_KEY" in aider_env and "OPENAI_API_KEY" not in aider_env
    assert all("GITHUB_TOKEN" not in env for env in (claude_env, codex_env, aider_env))


def sleeper_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return install_fakes(tmp_path, monkeypatch, {"T1": {"sleep": 120}})


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_timeout_ends_the_whole_process_tree(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = sleeper_plan(tmp_path, monkeypatch)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    invocation = Invocation((str(tmp_path / "bin" / "claude"), "-p", "Task: T1 - wait"),
                            cli_environment(()), tmp_path)
    finished = run_invocation(invocation, timeout=3, scratch=scratch)
    assert finished.timed_out and finished.stopped is None
    assert not any(wait_until_gone(marker) for marker in markers(log, "T1"))


def test_a_stop_ends_the_whole_process_tree(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    log = sleeper_plan(tmp_path, monkeypatch)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    marker = log / "pids-T1.json"
    invocation = Invocation((str(tmp_path / "bin" / "codex"), "exec", "--json",
                             "Task: T1 - wait"), cli_environment(()), tmp_path)
    finished = run_invocation(invocation, timeout=600, scratch=scratch,
                              should_stop=lambda: "Budget reached" if marker.exists() else None)
    assert finished.stopped == "Budget reached" and not finished.timed_out
    assert not any(wait_until_gone(marker) for marker in markers(log, "T1"))
    assert codex.parse(finished.stdout, "", finished.exit_code).session_id == "thread-T1"


def test_prepare_is_the_one_place_the_invocation_is_wrapped(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    seen: list[Invocation] = []

    def wrap(invocation: Invocation) -> Invocation:
        seen.append(invocation)
        return Invocation((sys.executable, "-c", "print('wrapped')"), invocation.env,
                          invocation.cwd)

    finished = run_invocation(Invocation(("false",), {}, tmp_path), timeout=30,
                              scratch=scratch, wrap=wrap)
    assert finished.exit_code == 0 and finished.stdout.strip() == "wrapped"
    assert seen[0].argv == ("false",)


# -- pre-flight and check ----------------------------------------------------------------------


def test_preflight_names_every_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    problems = preflight({
        "agents": {"backend-dev": {"worker": "claude-code"},
                   "manager": {"worker": "aider"},
                   "frontend-dev": {"worker": {"type": "codex", "executable": "/bin/true"}},
                   "qa-tester": {"worker": {"command": ["/bin/true", "{model}"]}}},
        "limits": {"cost_limit_usd": 5},
    })
    text = "\n".join(str(p) for p in problems)
    assert "npm install -g @anthropic-ai/claude-code" in text
    assert "the manager plans" in text
    assert "Codex reports no cost" in text
    assert "uses {model}" in text and "never passes the task" in text
    assert preflight({"agents": {"backend-dev": {"worker": "builtin"}}}) == []


def test_check_lists_installed_clis_with_versions_and_fails_for_a_missing_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    make_repo(project)
    install_fakes(tmp_path, monkeypatch)
    (tmp_path / "bin" / "aider").unlink()
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-0123456789abcdef0123"}
    done = subprocess.run([sys.executable, str(TEAM_PY), "check", "--project-dir",
                           str(project)], capture_output=True, text=True, env=env, timeout=120)
    assert "2.1.3 (Claude Code)" in done.stdout and "codex-cli 0.58.0" in done.stdout
    assert "pip install aider-chat" in done.stdout
    config = {"agents": {"backend-dev": {"worker": "aider"}}}
    (project / "orchestrator-config.json").write_text(json.dumps(config))
    done = subprocess.run([sys.executable, str(TEAM_PY), "check", "--project-dir",
                           str(project)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "problem  backend-dev worker" in done.stdout


def test_a_cli_runs_in_the_sandbox_with_its_login_and_the_network(tmp_path: Path) -> None:
    from agent_team.cli_agents.confine import confined
    from agent_team.cli_agents.runner import Invocation
    from agent_team.sandbox import SANDBOX_HOME, SandboxPolicy

    home = tmp_path / "home"
    (home / ".claude").mkdir(parents=True)
    (home / ".ssh").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    wrap = confined(SandboxPolicy(), tmp_path / "scratch", home=home)
    inner = Invocation(argv=("claude", "-p", "hi"), env={"ANTHROPIC_API_KEY": "k", "PATH": "/bin"},
                       cwd=work)

    wrapped = wrap(inner)

    argv = list(wrapped.argv)
    assert argv[0].endswith("bwrap") and argv[-3:] == ["claude", "-p", "hi"]
    assert "--unshare-net" not in argv  # the CLI must reach its API
    assert ["--bind", str(home / ".claude"), f"{SANDBOX_HOME}/.claude"] == argv[
        argv.index(str(home / ".claude")) - 1: argv.index(str(home / ".claude")) + 2]
    assert str(home / ".ssh") not in argv
    assert wrapped.env["HOME"] == SANDBOX_HOME and wrapped.env["ANTHROPIC_API_KEY"] == "k"
    assert confined(SandboxPolicy(enabled=False), tmp_path)(inner) == inner
