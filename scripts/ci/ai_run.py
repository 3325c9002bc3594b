#!/usr/bin/env python3
"""The workflow's implement step: run the orchestrator, end every process it left, collect.

The step's shell `exec`s this script, so no shell holding the model key stays behind. Before
anything else it imports what it needs later (the redaction rules) while the checkout is still
the base commit, and masks the key in its own /proc environ block; then:

- the orchestrator runs as a child with no `GITHUB_ENV`/`GITHUB_OUTPUT`/`GITHUB_PATH`/
  `GITHUB_STEP_SUMMARY`/`GITHUB_STATE` in its environment, and the directories of those files
  (and `RUNNER_TEMP`) hidden from the sandbox; this script writes the log itself (no `tee`);
- this process is a child subreaper: whatever the run started and left behind, even a
  double-forked daemon in a session of its own, is re-parented here and killed when the
  orchestrator exits, so no later step or job shares the runner with it;
- the branch, the report and the log are collected without running any code from the checkout
  the agents edited (git runs with hooks and fsmonitor off), and the step's outputs written.

    exec python scripts/ci/ai_run.py --provider anthropic --feature-file F --out DIR \
        --base-sha SHA [--model M] [--orchestrator PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "orchestration"))

from agent_team.process import hide_secrets_from_proc  # noqa: E402  (loaded before agents run)
from agent_team.redaction import redact  # noqa: E402

KEY_VARIABLES = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY")
#: Files through which a step changes later steps; agents must not reach them.
GITHUB_FILES = ("GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STEP_SUMMARY",
                "GITHUB_STATE")
HIDE_VARIABLE = "AGENT_TEAM_SANDBOX_HIDE"
ORCHESTRATOR = HERE.parent / "orchestration" / "file_based_orchestrator.py"
PR_SET_CHILD_SUBREAPER = 36
BRANCH_NAME = re.compile(r"feature/[a-z0-9]+(-[a-z0-9]+)*")
#: No hook, fsmonitor or pager of the checkout's config runs in git commands here.
SAFE_GIT = {"GIT_CONFIG_COUNT": "3", "GIT_CONFIG_KEY_0": "core.fsmonitor",
            "GIT_CONFIG_VALUE_0": "false", "GIT_CONFIG_KEY_1": "core.hooksPath",
            "GIT_CONFIG_VALUE_1": "/dev/null", "GIT_CONFIG_KEY_2": "core.pager",
            "GIT_CONFIG_VALUE_2": "cat"}


def masker(keys: Iterable[str]) -> Callable[[str], str]:
    """The redaction rules, plus the exact key values this run was given."""
    values = [k for k in keys if len(k) >= 8]

    def mask(text: str) -> str:
        for value in values:
            text = text.replace(value, "[REDACTED]")
        return redact(text)

    return mask


def orchestrator_env(environ: dict[str, str]) -> dict[str, str]:
    """The environment of the orchestrator: no GitHub command files, their folders hidden."""
    hidden = [str(Path(environ[name]).parent) for name in GITHUB_FILES if environ.get(name)]
    if environ.get("RUNNER_TEMP"):
        hidden.append(environ["RUNNER_TEMP"])
    env = {k: v for k, v in environ.items() if k not in GITHUB_FILES and k != HIDE_VARIABLE}
    env[HIDE_VARIABLE] = os.pathsep.join(dict.fromkeys(hidden))
    return env


def become_subreaper() -> bool:
    """Orphaned descendants are re-parented to this process (Linux), so they can be ended."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def end_descendants() -> int:
    """SIGKILL every process below this one until none is left; returns how many."""
    ended = 0
    for _ in range(100):
        children = children_of(os.getpid())
        if not children:
            break
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                ended += 1
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        time.sleep(0.05)
    return ended


def run_orchestrator(args: argparse.Namespace, env: dict[str, str],
                     mask: Callable[[str], str], log: Path) -> tuple[int, int]:
    """Run it, echo and log its output masked, then end what it left; (exit code, ended).

    Output is read in a thread: a process left behind may hold the pipe open, so the end of
    the output comes only after the leftovers are killed.
    """
    feature = Path(args.feature_file).read_text(encoding="utf-8").rstrip("\n")
    argv = [sys.executable, str(args.orchestrator), "--project-dir", args.project_dir,
            "--api-provider", args.provider]
    if args.model:
        argv += ["--model", args.model]
    argv += ["--feature", feature]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, text=True, errors="replace")
    stream = process.stdout
    assert stream is not None

    def pump() -> None:
        with log.open("w", encoding="utf-8") as out:
            for line in stream:
                clean = mask(line)
                sys.stdout.write(clean)
                sys.stdout.flush()
                out.write(clean)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    code = process.wait()
    ended = end_descendants()
    reader.join(timeout=30)
    return code, ended


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def collect(project: Path, out: Path, base_sha: str, mask: Callable[[str], str]) -> tuple[str, int]:
    """Copy the report (masked) and bundle the feature branch; returns (branch, commits)."""
    state = read_json(project / ".ai-agents" / "state" / "team-communication.json")
    feature = state.get("current_feature") or {}
    branch = str(feature.get("branch") or "")
    for run in reversed(state.get("runs") or []):
        if run.get("run_id") == feature.get("run_id") and run.get("report"):
            for suffix in (".md", ".json"):
                source = (project / str(run["report"])).with_suffix(suffix)
                if source.is_file() and not source.is_symlink():
                    text = source.read_text(encoding="utf-8", errors="replace")
                    (out / f"report{suffix}").write_text(mask(text), encoding="utf-8")
            break
    branch = str(read_json(out / "report.json").get("feature_branch") or branch)
    if not BRANCH_NAME.fullmatch(branch):  # written by the run: never trusted as text
        return "", 0
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/"),
           "GIT_CONFIG_NOSYSTEM": "1", **SAFE_GIT}

    def git(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(project), *argv], env=env, text=True,
                              capture_output=True, check=False)

    if not branch or git("rev-parse", "--verify", "--quiet", f"refs/heads/{branch}").returncode:
        return branch, 0
    counted = git("rev-list", "--count", f"{base_sha}..refs/heads/{branch}")
    commits = int(counted.stdout.strip() or 0) if counted.returncode == 0 else 0
    if commits:
        git("bundle", "create", str(out / "feature.bundle"), f"refs/heads/{branch}",
            f"^{base_sha}")
    return branch, commits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--provider", required=True)
    parser.add_argument("--model", default="")
    parser.add_argument("--feature-file", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--base-sha", required=True)
    parser.add_argument("--project-dir", default=".")
    parser.add_argument("--orchestrator", default=str(ORCHESTRATOR))
    args = parser.parse_args(argv)

    keys = [os.environ.get(name, "") for name in KEY_VARIABLES]
    hide_secrets_from_proc()  # this process was started with the key in its environment
    output = os.environ.get("GITHUB_OUTPUT")
    mask = masker(keys)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    become_subreaper()
    code, ended = run_orchestrator(args, orchestrator_env(dict(os.environ)), mask,
                                   out / "orchestrator.log")
    if ended:
        print(f"Ended {ended} process(es) the run left behind.")
    branch, commits = collect(Path(args.project_dir), out, args.base_sha, mask)
    print(f"Orchestrator exit code: {code}; branch: {branch or 'none'}, {commits} new commit(s)")
    if output:
        with open(output, "a", encoding="utf-8") as handle:
            handle.write(f"exit-code={code}\nbranch={branch}\ncommits={commits}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
