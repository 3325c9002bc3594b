"""Fake `claude`, `codex` and `aider` executables for tests: small Python scripts on PATH.

Each fake edits files in its working directory and prints what the real CLI prints (the
formats are documented in `agent_team/cli_agents/claude_code.py`, `codex.py`, `aider.py`).
What each one does is read from a JSON plan keyed by task id (found in the prompt's
"Task: <id> - ..." line); every invocation is logged with its argv and the names of the
environment variables it saw, so tests can check flags and credentials.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_team.cli_agents import confine
from agent_team.cli_agents import task as cli_task

FAKE_SOURCE = r'''
import json, os, re, subprocess, sys, time, uuid
from pathlib import Path

NAME = os.path.basename(sys.argv[0])
ROOT = Path(os.environ["FAKE_CLI_DIR"])
argv = sys.argv[1:]
if argv == ["--version"]:
    print({"claude": "2.1.3 (Claude Code)", "codex": "codex-cli 0.58.0",
           "aider": "aider 0.86.1"}[NAME])
    sys.exit(0)

def value(flag):
    return argv[argv.index(flag) + 1] if flag in argv else None

if NAME == "claude":
    prompt = value("-p")
elif NAME == "codex":
    prompt = argv[-1]
else:
    prompt = value("--message")
match = re.search(r"^Task: (\S+) - ", prompt or "", re.M)
task = match.group(1) if match else "resume"
plans = json.loads((ROOT / "plan.json").read_text())
plan = plans.get(f"{NAME}:{task}") or plans.get(task) or {}
(ROOT / f"calls-{time.time_ns()}-{os.getpid()}.json").write_text(json.dumps({
    "name": NAME, "task": task, "argv": argv, "cwd": os.getcwd(),
    "env": sorted(os.environ), "pid": os.getpid()}))

for path, content in plan.get("writes", {}).items():
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(content)
for path in plan.get("litter", []):
    Path(path).write_text("cache")
if plan.get("commit"):  # a CLI that commits on its own; in the sandbox git is read-only
    added = subprocess.run(["git", "add", "-A"], check=False, capture_output=True)
    made = added.returncode == 0 and subprocess.run(
        ["git", "-c", "user.name=cli", "-c", "user.email=cli@x", "commit", "-qm",
         "commit by the CLI"], check=False, capture_output=True).returncode == 0
    (ROOT / f"commit-{task}.json").write_text(json.dumps(
        {"committed": made, "stderr": added.stderr.decode(errors="replace")}))
if plan.get("sleep"):
    # The CLI runs in the sandbox's own PID namespace: its pids mean nothing to the test, so
    # the test finds the CLI and its child by their command lines.
    child_marker = f"fake-cli-child-{ROOT}-{task}"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)",
                              child_marker])
    (ROOT / f"pids-{task}.tmp").write_text(json.dumps([sys.argv[0], child_marker]))
    os.replace(ROOT / f"pids-{task}.tmp", ROOT / f"pids-{task}.json")  # seen whole or not
    if NAME == "codex":
        print(json.dumps({"type": "thread.started", "thread_id": "thread-" + task}), flush=True)
    time.sleep(plan["sleep"])
code = plan.get("exit", 0)
text = plan.get("result", f"Done with {task}: all deliverables written and tests pass.")

if NAME == "claude":
    session = value("--resume") or value("--session-id") or str(uuid.uuid4())
    if plan.get("no_json"):
        print("Error: Invalid API key · Please run /login", file=sys.stderr)
        sys.exit(1)
    subtype = plan.get("subtype", "success")
    out = {"type": "result", "subtype": subtype, "is_error": bool(plan.get("is_error")),
           "duration_ms": 5210, "duration_api_ms": 4870, "num_turns": plan.get("turns", 4),
           "session_id": session, "total_cost_usd": plan.get("cost", 0.0421),
           "usage": {"input_tokens": 12, "cache_creation_input_tokens": 3000,
                     "cache_read_input_tokens": 9000, "output_tokens": 450,
                     "server_tool_use": {"web_search_requests": 0}, "service_tier": "standard"},
           "modelUsage": {}, "permission_denials": [], "uuid": str(uuid.uuid4())}
    if subtype == "success":
        out["result"] = text
    else:
        out["errors"] = [text]
    print(json.dumps(out))
elif NAME == "codex":
    thread = argv[argv.index("resume") + 1] if "resume" in argv else "thread-" + task
    events = [{"type": "thread.started", "thread_id": thread}, {"type": "turn.started"},
              {"type": "item.completed", "item": {"id": "item_0", "type": "file_change",
               "changes": [{"path": p, "kind": "update"} for p in plan.get("writes", {})],
               "status": "completed"}}]
    if plan.get("fail"):
        events += [{"type": "error", "message": plan["fail"]},
                   {"type": "turn.failed", "error": {"message": plan["fail"]}}]
    else:
        events += [{"type": "item.completed", "item": {"id": "item_1",
                    "type": "agent_message", "text": text}},
                   {"type": "turn.completed", "usage": {"input_tokens": 2946,
                    "cached_input_tokens": 1024, "output_tokens": 310}}]
    for event in events:
        print(json.dumps(event))
    if code:
        print("ERROR: unexpected status 401 Unauthorized", file=sys.stderr)
else:
    print("Aider v0.86.1\nMain model: gpt-4.1 with diff edit format\nGit repo: .git")
    for path in plan.get("writes", {}):
        print(f"Applied edit to {path}")
    print("Tokens: 2.3k sent, 1.1k cache write, 512 received. Cost: $0.01 message, "
          "$0.03 session." if plan.get("priced", True)
          else "Tokens: 2.3k sent, 512 received.")
    print(text)
sys.exit(code)
'''


def install_fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  plans: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write the three fakes into tmp_path/bin, put it first on PATH; returns the log dir."""
    bin_dir = tmp_path / "bin"
    log_dir = tmp_path / "cli-log"
    bin_dir.mkdir(exist_ok=True)
    log_dir.mkdir(exist_ok=True)
    for name in ("claude", "codex", "aider"):
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{FAKE_SOURCE}", encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    set_plans(log_dir, plans or {})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("FAKE_CLI_DIR", str(log_dir))
    # The fakes report to the test through log_dir, which the sandbox would hide: the one
    # addition to the real sandbox the CLIs run in.
    monkeypatch.setattr(cli_task, "confined", lambda policy, scratch: confine.confined(
        policy, scratch, writable=[log_dir]))
    return log_dir


def set_plans(log_dir: Path, plans: dict[str, dict[str, Any]]) -> None:
    (log_dir / "plan.json").write_text(json.dumps(plans), encoding="utf-8")


def calls(log_dir: Path) -> list[dict[str, Any]]:
    """Every logged invocation, in order."""
    return [json.loads(p.read_text()) for p in sorted(log_dir.glob("calls-*.json"))]


def markers(log_dir: Path, task: str) -> list[str]:
    """What the command lines of a sleeping fake CLI and of its child contain."""
    return json.loads((log_dir / f"pids-{task}.json").read_text())
