"""The GitHub workflows: triggers, least privilege, no script injection, pinned actions, linters."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import make_repo

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
AI_WORKFLOW = WORKFLOWS / "ai-development.yml"
CI_WORKFLOW = WORKFLOWS / "ci.yml"
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"
TRIGGER_LABEL = "ai-implement"

#: Oldest major version accepted per action; raise these when a new major is adopted.
MIN_MAJOR = {
    "actions/checkout": 7,
    "actions/setup-python": 7,
    "actions/upload-artifact": 7,
    "actions/download-artifact": 8,
}

#: Event fields anyone who can open an issue, comment or push a branch controls.
UNTRUSTED = re.compile(
    r"github\.event\.(issue\.(title|body)|label\.name|comment\.body|review\.body"
    r"|pull_request\.(title|body|head\.ref|head\.label)|head_commit\.message"
    r"|commits|pages|[a-z_.]*user\.login|[a-z_.]*author\.(name|email))"
    r"|github\.head_ref"
)
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def load(path: Path) -> dict[str, Any]:
    """Parse a workflow; YAML 1.1 reads the bare key `on` as True, so put it back."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if True in data:
        data["on"] = data.pop(True)
    return data


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) pair below `node`, depth first."""
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, (*path, index))


def steps(workflow: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, job in workflow["jobs"].items():
        for step in job.get("steps", []):
            yield name, step


def needs(job: dict[str, Any]) -> list[str]:
    value = job.get("needs", [])
    return [value] if isinstance(value, str) else list(value)


@pytest.fixture(scope="module")
def ai() -> dict[str, Any]:
    return load(AI_WORKFLOW)


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return load(CI_WORKFLOW)


@pytest.fixture(scope="module", params=["ai-development.yml", "ci.yml"])
def workflow(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(WORKFLOWS / request.param)


# --- the AI development workflow ----------------------------------------------------------------


def test_ai_workflow_runs_when_an_issue_is_labeled(ai: dict[str, Any]) -> None:
    assert ai["on"] == {"issues": {"types": ["labeled"]}}


def test_trigger_label_is_named_once_in_the_gate_job(ai: dict[str, Any]) -> None:
    mentions = [path for path, value in walk(ai) if isinstance(value, str)
                and TRIGGER_LABEL in value]
    assert mentions == [("jobs", "prepare", "if")]
    assert ai["jobs"]["prepare"]["if"] == f"github.event.label.name == '{TRIGGER_LABEL}'"
    for name, job in ai["jobs"].items():
        if name != "prepare":
            assert "prepare" in needs(job), f"job {name} must wait for the label check"


def test_no_job_condition_uses_a_context_jobs_cannot_see(ai: dict[str, Any]) -> None:
    for name, job in ai["jobs"].items():
        condition = str(job.get("if", ""))
        assert not re.search(r"\b(env|secrets|steps)\.", condition), name


def test_permissions_are_least_privilege(ai: dict[str, Any]) -> None:
    assert ai["permissions"] == {}
    jobs = ai["jobs"]
    assert all("permissions" in job for job in jobs.values())
    assert jobs["prepare"]["permissions"] == {}
    assert jobs["no-api-key"]["permissions"] == {"issues": "write"}
    assert jobs["implement"]["permissions"] == {"contents": "read"}
    assert jobs["publish"]["permissions"] == {
        "contents": "write", "pull-requests": "write", "issues": "write",
    }


def test_the_job_that_runs_agents_cannot_write(ai: dict[str, Any]) -> None:
    runners = [name for name, step in steps(ai) if "ai_run.py" in step.get("run", "")]
    assert runners == ["implement"]
    assert set(ai["jobs"]["implement"]["permissions"].values()) == {"read"}


def test_concurrency_is_per_issue_and_never_cancels_a_run(ai: dict[str, Any]) -> None:
    concurrency = ai["concurrency"]
    assert "github.event.issue.number" in concurrency["group"]
    assert concurrency["cancel-in-progress"] is False


def test_issue_text_reaches_the_orchestrator_only_through_env_and_a_file(
    ai: dict[str, Any],
) -> None:
    writer = next(step for _, step in steps(ai) if step.get("name") == "Write the issue to a file")
    assert writer["env"] == {
        "ISSUE_TITLE": "${{ github.event.issue.title }}",
        "ISSUE_BODY": "${{ github.event.issue.body }}",
    }
    assert "feature.md" in writer["run"]
    run = next(step for _, step in steps(ai) if step.get("id") == "run")
    assert '--feature-file "$RUNNER_TEMP/feature.md"' in run["run"]


def test_provider_follows_the_secret_that_is_set(ai: dict[str, Any]) -> None:
    gate = ai["jobs"]["prepare"]["steps"][0]
    assert gate["env"] == {
        "HAS_ANTHROPIC_KEY": "${{ secrets.ANTHROPIC_API_KEY != '' }}",
        "HAS_OPENAI_KEY": "${{ secrets.OPENAI_API_KEY != '' }}",
    }
    assert gate["run"].index("anthropic") < gate["run"].index("openai")
    assert ai["jobs"]["implement"]["if"] == "needs.prepare.outputs.provider != ''"
    run = next(step for _, step in steps(ai) if step.get("id") == "run")
    assert "secrets.ANTHROPIC_API_KEY" in run["env"]["ANTHROPIC_API_KEY"]
    assert "secrets.OPENAI_API_KEY" in run["env"]["OPENAI_API_KEY"]
    assert '--provider "$PROVIDER"' in run["run"]


def test_missing_key_gets_an_actionable_comment_and_a_green_run(ai: dict[str, Any]) -> None:
    job = ai["jobs"]["no-api-key"]
    assert job["if"] == "needs.prepare.outputs.provider == ''"
    script = "\n".join(step["run"] for step in job["steps"])
    for text in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "settings/secrets/actions",
                 "gh issue comment"):
        assert text in script
    assert "exit 1" not in script
    assert not any("uses" in step for step in job["steps"])


def test_publish_pushes_opens_pr_and_comments_even_after_a_failure(ai: dict[str, Any]) -> None:
    job = ai["jobs"]["publish"]
    assert job["if"].startswith("always()")
    assert needs(job) == ["prepare", "implement"]
    script = "\n".join(step.get("run", "") for step in job["steps"])
    assert "gh auth setup-git" in script
    assert "git push origin" in script
    assert "gh pr create" in script and "gh pr edit" in script
    assert "gh issue comment" in script
    for code in ("0)", "1)", "2)", "3)"):
        assert code in script
    assert "Allow GitHub" in script
    assert job["steps"][-1]["if"] == "needs.implement.outputs.exit-code != '0'"


def test_the_key_reaches_only_a_process_that_replaces_the_shell(ai: dict[str, Any]) -> None:
    """The step holding the key `exec`s the launcher, so no shell keeps it in its environ;
    no other step of any job sees the key."""
    holders = [(job, step.get("id")) for job, step in steps(ai)
               if any("_API_KEY" in k and "secrets." in v
                      for k, v in step.get("env", {}).items())]
    assert holders == [("implement", "run")]
    run = next(step for _, step in steps(ai) if step.get("id") == "run")
    assert run["run"].startswith("exec python scripts/ci/ai_run.py ")
    assert "|" not in run["run"] and "tee" not in run["run"]
    outputs = ai["jobs"]["implement"]["outputs"]
    assert {k: v for k, v in outputs.items()} == {
        "exit-code": "${{ steps.run.outputs.exit-code }}",
        "branch": "${{ steps.run.outputs.branch }}",
        "commits": "${{ steps.run.outputs.commits }}"}


def test_no_step_after_the_agents_runs_code_from_their_checkout(ai: dict[str, Any]) -> None:
    names = [step.get("name") for step in ai["jobs"]["implement"]["steps"]]
    after = ai["jobs"]["implement"]["steps"][names.index(
        "Run the orchestrator and collect the branch") + 1:]
    assert [step.get("uses", "").split("@")[0] for step in after] == ["actions/upload-artifact"]
    publish = "\n".join(step.get("run", "") for step in ai["jobs"]["publish"]["steps"])
    for word in ("python", "agent_team", "scripts/", "pip ", "make ", "npm "):
        assert word not in publish, word
    assert "git fetch --quiet \"$result/feature.bundle\"" in publish


def test_checkouts_keep_no_credentials_and_fetch_history(workflow: dict[str, Any]) -> None:
    checkouts = [step for _, step in steps(workflow)
                 if step.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


def test_ai_checkouts_fetch_full_history(ai: dict[str, Any]) -> None:
    for name, step in steps(ai):
        if step.get("uses", "").startswith("actions/checkout@"):
            assert step["with"]["fetch-depth"] == 0, name


def test_git_identity_is_set_before_the_agents_commit(ai: dict[str, Any]) -> None:
    names = [step.get("name") for step in ai["jobs"]["implement"]["steps"]]
    assert names.index("Set the git identity for commits") < names.index(
        "Run the orchestrator and collect the branch")
    script = step_script(ai, "implement", "Set the git identity for commits")
    assert 'git config --global user.name "github-actions[bot]"' in script
    assert "git config --global user.email" in script


# --- both workflows -----------------------------------------------------------------------------


def test_no_script_expands_an_expression_with_untrusted_text(workflow: dict[str, Any]) -> None:
    for path, value in walk(workflow):
        if not isinstance(value, str) or not path:
            continue
        if path[-1] in ("run", "script"):
            for expression in EXPRESSION.findall(value):
                assert "github.event" not in expression, f"{path}: {expression}"
                assert not UNTRUSTED.search(expression), f"{path}: {expression}"


def test_untrusted_fields_appear_only_in_env_and_conditions(workflow: dict[str, Any]) -> None:
    allowed_parents = {"env", "if"}
    for path, value in walk(workflow):
        if isinstance(value, str) and any(UNTRUSTED.search(e) for e in EXPRESSION.findall(value)):
            parent = path[-2] if len(path) > 1 else None
            assert parent == "env" or path[-1] in allowed_parents or path == (
                "concurrency", "group"), path


def test_secrets_come_only_from_the_secrets_context(workflow: dict[str, Any]) -> None:
    for path, value in walk(workflow):
        if not isinstance(value, str):
            continue
        assert not re.search(r"\bsk-(ant-|proj-)?[A-Za-z0-9_-]{16,}", value), path
        if "secrets." in value:
            assert len(path) > 1 and path[-2] == "env", f"secret outside env: {path}"
        if path and str(path[-1]).endswith(("_API_KEY", "_TOKEN")) and path[-2] == "env":
            assert re.fullmatch(r"\$\{\{.*(secrets\.|github\.token).*\}\}", value), path


def test_actions_are_pinned_to_a_current_major(workflow: dict[str, Any]) -> None:
    for job, step in steps(workflow):
        if "uses" not in step:
            continue
        action, _, ref = step["uses"].partition("@")
        assert action in MIN_MAJOR, f"{job}: {action} is not in the reviewed list"
        match = re.fullmatch(r"v(\d+)", ref)
        assert match, f"{job}: {step['uses']} is not pinned to a major version tag"
        assert int(match[1]) >= MIN_MAJOR[action], f"{job}: {step['uses']} is too old"


def test_every_job_has_permissions_and_a_timeout(workflow: dict[str, Any]) -> None:
    assert workflow["permissions"] == {}
    for name, job in workflow["jobs"].items():
        assert "permissions" in job, name
        assert 0 < job["timeout-minutes"] <= 120, name


# --- the CI workflow ----------------------------------------------------------------------------


def test_ci_runs_the_tests_on_push_and_pull_request(ci: dict[str, Any]) -> None:
    assert set(ci["on"]) == {"push", "pull_request"}
    job = ci["jobs"]["test"]
    assert job["permissions"] == {"contents": "read"}
    assert "3.11" in job["strategy"]["matrix"]["python-version"]
    commands = [step.get("run") for step in job["steps"]]
    assert "python -m pip install -r requirements.txt" in commands
    assert "python -m pytest -q" in commands


# --- real linters -------------------------------------------------------------------------------


def _tool(name: str) -> str | None:
    beside_python = Path(sys.executable).parent / name
    return str(beside_python) if beside_python.is_file() else shutil.which(name)


def test_zizmor_finds_nothing() -> None:
    zizmor = _tool("zizmor")
    if zizmor is None:
        pytest.skip("zizmor is not installed (pip install -r requirements.txt installs it)")
    for persona in ("regular", "pedantic"):
        result = subprocess.run(
            [zizmor, "--offline", "--no-progress", "--config", str(ZIZMOR_CONFIG),
             "--persona", persona, "--format", "plain", str(WORKFLOWS)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert result.returncode == 0, f"zizmor ({persona}):\n{result.stdout}{result.stderr}"


def test_actionlint_finds_nothing() -> None:
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed; it is optional (zizmor always runs)")
    result = subprocess.run(
        [actionlint, "-no-color", *(str(p) for p in sorted(WORKFLOWS.glob("*.yml")))],
        capture_output=True, text=True, timeout=60, check=False, cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the workflow's scripts, run for real against local repositories ----------------------------

HOSTILE_TITLE = 'Add login $(touch pwned-1) `touch pwned-2` "; touch pwned-3; echo "'
FAKE_GH = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$GH_LOG"
case "$1 $2" in
  "pr create") echo "https://github.test/owner/repo/pull/7" ;;
  "issue comment")
    while [ $# -gt 0 ]; do
      if [ "$1" = "--body-file" ]; then cp "$2" "$GH_COMMENT"; fi
      shift
    done ;;
esac
"""
FAKE_ORCHESTRATOR = """#!/usr/bin/env bash
if [ "$1" = "scripts/ci/ai_run.py" ]; then
  "$REAL_PYTHON" -c 'import json, sys; json.dump(sys.argv[2:], open(sys.argv[1], "w"))' \\
    "$ARGV_FILE" "$@"
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def step_script(workflow: dict[str, Any], job: str, name_or_id: str) -> str:
    for step in workflow["jobs"][job]["steps"]:
        if name_or_id in (step.get("name"), step.get("id")):
            return step["run"]
    raise AssertionError(f"no step {name_or_id!r} in job {job}")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


class Runner:
    """Runs a step's script the way GitHub does, with a fake `gh` and a scratch RUNNER_TEMP."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.temp = tmp / "runner-temp"
        self.temp.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        for name, text in (("gh", FAKE_GH), ("python", FAKE_ORCHESTRATOR)):
            (self.bin / name).write_text(text)
            (self.bin / name).chmod(0o755)
        self.output = tmp / "github-output"
        self.gh_log = tmp / "gh.log"
        self.comment = tmp / "comment.md"

    def run(self, script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        path = self.tmp / "step.sh"
        path.write_text(script)
        self.output.write_text("")
        full_env = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}", "HOME": str(self.tmp),
            "RUNNER_TEMP": str(self.temp), "GITHUB_OUTPUT": str(self.output),
            "GH_LOG": str(self.gh_log), "GH_COMMENT": str(self.comment),
            "REAL_PYTHON": sys.executable, "ARGV_FILE": str(self.tmp / "argv.json"),
            "GIT_CONFIG_GLOBAL": str(self.tmp / "gitconfig"), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com", **env,
        }
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)],
                              cwd=cwd, env=full_env, capture_output=True, text=True,
                              timeout=60, check=False)

    def outputs(self) -> dict[str, str]:
        lines = self.output.read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def gh_calls(self) -> list[str]:
        return self.gh_log.read_text().splitlines() if self.gh_log.exists() else []


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


@pytest.fixture
def remote(tmp_path: Path) -> tuple[Path, Path, str]:
    """A bare origin with one commit on main, and a full clone of it (the job's checkout)."""
    seed = tmp_path / "seed"
    make_repo(seed, {"README.md": "# app\n"})
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(seed), str(origin))
    checkout = tmp_path / "checkout"
    git(tmp_path, "clone", "--quiet", str(origin), str(checkout))
    return origin, checkout, git(checkout, "rev-parse", "HEAD")


def agent_branch(checkout: Path, branch: str, text: str) -> str:
    git(checkout, "switch", "--quiet", "-c", branch)
    (checkout / "login.py").write_text(text)
    git(checkout, "add", "login.py")
    git(checkout, "-c", "user.name=agent", "-c", "user.email=a@example.com", "commit",
        "--quiet", "-m", "TASK-001: login")
    git(checkout, "switch", "--quiet", "-")
    return git(checkout, "rev-parse", branch)


def publish_env(**overrides: str) -> dict[str, str]:
    env = {
        "GH_TOKEN": "fake", "GH_REPO": "owner/repo", "SERVER_URL": "https://github.test",
        "RUN_ID": "4242", "BASE_BRANCH": "main", "ISSUE_NUMBER": "12",
        "ISSUE_TITLE": HOSTILE_TITLE, "EXIT_CODE": "0", "BRANCH": "feature/add-login",
        "IMPLEMENT_RESULT": "success",
    }
    return {**env, **overrides}


def test_issue_text_is_written_verbatim(ai: dict[str, Any], runner: Runner,
                                        tmp_path: Path) -> None:
    script = step_script(ai, "implement", "Write the issue to a file")
    body = "Use JWT.\r\nRun `rm -rf /` $(whoami) ${{ secrets.X }}\r\n"
    result = runner.run(script, tmp_path, {"ISSUE_TITLE": HOSTILE_TITLE, "ISSUE_BODY": body})
    assert result.returncode == 0, result.stderr
    text = (runner.temp / "feature.md").read_text(encoding="utf-8")
    assert text == f"{HOSTILE_TITLE}\n\nUse JWT.\nRun `rm -rf /` $(whoami) ${{{{ secrets.X }}}}\n"
    assert not list(tmp_path.glob("pwned-*"))


def test_run_step_execs_the_launcher_with_the_feature_file(ai: dict[str, Any], runner: Runner,
                                                          tmp_path: Path) -> None:
    (runner.temp / "feature.md").write_text(HOSTILE_TITLE + "\n\nBody line\n")
    result = runner.run(step_script(ai, "implement", "run"), tmp_path,
                        {"PROVIDER": "anthropic", "AI_MODEL": "claude-x", "BASE_SHA": "abc"})
    assert result.returncode == 0, result.stderr
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv == ["scripts/ci/ai_run.py", "--provider", "anthropic", "--model", "claude-x",
                    "--feature-file", str(runner.temp / "feature.md"),
                    "--out", str(runner.temp / "ai-result"), "--base-sha", "abc"]
    assert not list(tmp_path.glob("pwned-*"))


#: Stands in for the orchestrator under ai_run.py: reports what it can see, leaves a daemon
#: behind, prints the key, and builds a feature branch with a report the way a run does.
FAKE_RUN = r"""
import json, os, subprocess, sys, time
from pathlib import Path
key = os.environ["ANTHROPIC_API_KEY"]
parent = Path(f"/proc/{os.getppid()}/environ").read_bytes()
seen = {"feature": sys.argv[sys.argv.index("--feature") + 1],
        "key_in_parent_environ": key.encode() in parent,
        "github_files": sorted(k for k in os.environ if k in (
            "GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")),
        "hidden": os.environ.get("AGENT_TEAM_SANDBOX_HIDE", "").split(os.pathsep)}
pid_file = Path(os.environ["SEEN"] + ".pid")
if os.fork() == 0:  # a double-forked daemon in a session of its own
    os.setsid()
    if os.fork() == 0:
        pid_file.write_text(str(os.getpid()))
        os.execvp("sleep", ["sleep", "300"])
    os._exit(0)
while not pid_file.exists() or not pid_file.read_text():
    time.sleep(0.01)
seen["daemon"] = int(pid_file.read_text())
Path(os.environ["SEEN"]).write_text(json.dumps(seen))
git = lambda *a: subprocess.run(["git", *a], check=True, capture_output=True)
git("switch", "-q", "-c", os.environ["BRANCH"])
Path("login.py").write_text("def login(): ...\n")
git("add", "login.py")
git("-c", "user.name=a", "-c", "user.email=a@example.com", "commit", "-q", "-m", "login")
git("switch", "-q", "-")
reports = Path(".ai-agents/reports")
reports.mkdir(parents=True)
(reports / "r1.md").write_text(f"# Run r1, key {key}\n")
(reports / "r1.json").write_text(json.dumps({"feature_branch": os.environ["BRANCH"]}))
state = {"current_feature": {"branch": os.environ["BRANCH"], "run_id": "r1"},
         "runs": [{"run_id": "r1", "report": ".ai-agents/reports/r1.md"}]}
Path(".ai-agents/state").mkdir()
Path(".ai-agents/state/team-communication.json").write_text(json.dumps(state))
print(f"[Orchestrator] Error: bad key {key}", flush=True)
sys.exit(3)
"""


def run_launcher(tmp_path: Path, checkout: Path, base: str,
                 branch: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any], Path]:
    fake = tmp_path / "fake_orchestrator.py"
    fake.write_text(FAKE_RUN)
    temp = tmp_path / "runner-temp"
    commands = temp / "_runner_file_commands"
    commands.mkdir(parents=True, exist_ok=True)
    files = {name: commands / f"{name.lower()}_x" for name in (
        "GITHUB_ENV", "GITHUB_OUTPUT", "GITHUB_PATH", "GITHUB_STEP_SUMMARY")}
    for path in files.values():
        path.write_text("")
    (temp / "feature.md").write_text(HOSTILE_TITLE + "\n")
    env = {**{k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")},
           **{k: str(v) for k, v in files.items()}, "RUNNER_TEMP": str(temp),
           "ANTHROPIC_API_KEY": FAKE_KEY, "SEEN": str(tmp_path / "seen.json"), "BRANCH": branch}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ci" / "ai_run.py"), "--provider", "anthropic",
         "--feature-file", str(temp / "feature.md"), "--out", str(temp / "ai-result"),
         "--base-sha", base, "--orchestrator", str(fake)],
        cwd=checkout, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (tmp_path / "seen.json").is_file(), result.stdout + result.stderr
    seen = json.loads((tmp_path / "seen.json").read_text())
    return result, seen, files["GITHUB_OUTPUT"]


FAKE_KEY = "sk-ant-api03-" + "K" * 40


def test_the_launcher_keeps_the_key_and_github_files_from_the_run_and_ends_its_processes(
    remote: tuple[Path, Path, str], tmp_path: Path,
) -> None:
    _, checkout, base = remote
    result, seen, output = run_launcher(tmp_path, checkout, base, "feature/add-login")

    assert result.returncode == 0, result.stdout + result.stderr
    assert seen["feature"] == HOSTILE_TITLE
    assert seen["key_in_parent_environ"] is False
    assert seen["github_files"] == []
    temp = tmp_path / "runner-temp"
    assert {str(temp / "_runner_file_commands"), str(temp)} <= set(seen["hidden"])
    assert not Path(f"/proc/{seen['daemon']}").exists()  # killed and reaped
    assert "process(es) the run left behind." in result.stdout
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs == {"exit-code": "3", "branch": "feature/add-login", "commits": "1"}
    out = temp / "ai-result"
    for name in ("orchestrator.log", "report.md"):
        assert FAKE_KEY not in (out / name).read_text() and "[REDACTED]" in (out / name).read_text()
    assert FAKE_KEY not in result.stdout + result.stderr
    heads = git(checkout, "bundle", "list-heads", str(out / "feature.bundle"))
    assert heads.endswith(" refs/heads/feature/add-login")


def test_the_launcher_reports_no_branch_it_does_not_recognise(
    remote: tuple[Path, Path, str], tmp_path: Path,
) -> None:
    _, checkout, base = remote
    result, _, output = run_launcher(tmp_path, checkout, base, "main-x")
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert outputs == {"exit-code": "3", "branch": "", "commits": "0"}
    assert not (tmp_path / "runner-temp" / "ai-result" / "feature.bundle").exists()


def _bundle(runner: Runner, checkout: Path, branch: str, base: str, report: str) -> None:
    out = runner.temp / "ai-result"
    out.mkdir(exist_ok=True)
    git(checkout, "bundle", "create", str(out / "feature.bundle"), f"refs/heads/{branch}",
        f"^{base}")
    (out / "report.md").write_text(report)


def test_publish_pushes_opens_the_pr_and_comments(
    ai: dict[str, Any], runner: Runner, remote: tuple[Path, Path, str], tmp_path: Path,
) -> None:
    origin, checkout, base = remote
    work = tmp_path / "implement"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    head = agent_branch(work, "feature/add-login", "def login(): ...\n")
    _bundle(runner, work, "feature/add-login", base, "# Run r1\n\n| Task | Status |\n")
    script = step_script(ai, "publish", "Push the branch, open or update the pull request, "
                         "comment on the issue")

    result = runner.run(script, checkout, publish_env())

    assert result.returncode == 0, result.stderr
    assert git(origin, "rev-parse", "refs/heads/feature/add-login") == head
    calls = runner.gh_calls()
    assert calls[0] == "auth setup-git"
    create = next(c for c in calls if c.startswith("pr create"))
    assert f"--title AI: {HOSTILE_TITLE}" in create
    assert "--head feature/add-login" in create and "--base main" in create
    comment = runner.comment.read_text()
    assert "Pull request: https://github.test/owner/repo/pull/7" in comment
    assert "| Task | Status |" in comment
    assert not list(checkout.glob("pwned-*"))


def test_publish_after_a_failure_keeps_the_branch_and_explains(
    ai: dict[str, Any], runner: Runner, remote: tuple[Path, Path, str], tmp_path: Path,
) -> None:
    origin, checkout, base = remote
    work = tmp_path / "implement"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    head = agent_branch(work, "feature/add-login", "broken\n")
    _bundle(runner, work, "feature/add-login", base, "# Run r1 failed\n")
    script = step_script(ai, "publish", "Push the branch, open or update the pull request, "
                         "comment on the issue")

    result = runner.run(script, checkout, publish_env(EXIT_CODE="1"))

    assert result.returncode == 0, result.stderr
    assert git(origin, "rev-parse", "refs/heads/feature/add-login") == head
    assert not any(c.startswith("pr create") for c in runner.gh_calls())
    comment = runner.comment.read_text()
    assert "failed (exit code 1)" in comment and "the tests failed" in comment
    assert "compare/main...feature/add-login" in comment


def test_publish_never_overwrites_a_different_existing_branch(
    ai: dict[str, Any], runner: Runner, remote: tuple[Path, Path, str], tmp_path: Path,
) -> None:
    origin, checkout, base = remote
    earlier = tmp_path / "earlier"
    git(tmp_path, "clone", "--quiet", str(origin), str(earlier))
    old = agent_branch(earlier, "feature/add-login", "earlier attempt\n")
    git(earlier, "push", "--quiet", "origin", "feature/add-login")
    git(checkout, "fetch", "--quiet", "origin")
    work = tmp_path / "implement"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    new = agent_branch(work, "feature/add-login", "second attempt\n")
    _bundle(runner, work, "feature/add-login", base, "# Run r2\n")
    script = step_script(ai, "publish", "Push the branch, open or update the pull request, "
                         "comment on the issue")

    result = runner.run(script, checkout, publish_env())

    assert result.returncode == 0, result.stderr
    assert git(origin, "rev-parse", "refs/heads/feature/add-login") == old
    assert git(origin, "rev-parse", "refs/heads/feature/add-login-run-4242") == new
    assert "--head feature/add-login-run-4242" in next(
        c for c in runner.gh_calls() if c.startswith("pr create"))


@pytest.mark.parametrize("branch", ["gh-pages", "main", "feature/../main", "feature/x y"])
def test_publish_pushes_only_branches_named_like_the_engine_names_them(
    ai: dict[str, Any], runner: Runner, remote: tuple[Path, Path, str], tmp_path: Path,
    branch: str,
) -> None:
    origin, checkout, base = remote
    work = tmp_path / "implement"
    git(tmp_path, "clone", "--quiet", str(origin), str(work))
    agent_branch(work, "gh-pages", "defaced\n")
    _bundle(runner, work, "gh-pages", base, "# Run\n")
    script = step_script(ai, "publish", "Push the branch, open or update the pull request, "
                         "comment on the issue")

    result = runner.run(script, checkout, publish_env(BRANCH=branch))

    assert result.returncode == 0, result.stderr
    assert git(origin, "branch", "--list") == "* main"
    assert "unexpected branch name, so nothing was pushed" in runner.comment.read_text()
    assert not any(c.startswith(("pr create", "auth")) for c in runner.gh_calls())


def test_publish_reports_a_run_that_never_finished(
    ai: dict[str, Any], runner: Runner, remote: tuple[Path, Path, str],
) -> None:
    _, checkout, _ = remote
    script = step_script(ai, "publish", "Push the branch, open or update the pull request, "
                         "comment on the issue")

    result = runner.run(script, checkout,
                        publish_env(EXIT_CODE="", BRANCH="", IMPLEMENT_RESULT="failure"))

    assert result.returncode == 0, result.stderr
    assert runner.gh_calls() == ["issue comment 12 --body-file " + str(runner.temp / "comment.md")]
    assert "did not finish (the job ended as: failure)" in runner.comment.read_text()


def test_missing_key_comment_names_the_secrets(ai: dict[str, Any], runner: Runner,
                                               tmp_path: Path) -> None:
    script = step_script(ai, "no-api-key", "Comment on the issue")
    result = runner.run(script, tmp_path, {
        "GH_TOKEN": "fake", "GH_REPO": "owner/repo", "ISSUE_NUMBER": "12",
        "LABEL": "ai-implement", "SERVER_URL": "https://github.test",
    })
    assert result.returncode == 0, result.stderr
    comment = runner.comment.read_text()
    assert "`ANTHROPIC_API_KEY`" in comment and "`OPENAI_API_KEY`" in comment
    assert "https://github.test/owner/repo/settings/secrets/actions/new" in comment


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap")
def test_the_sandbox_hides_the_folders_the_launcher_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside /tmp (which the sandbox replaces anyway), as RUNNER_TEMP is on a runner."""
    import tempfile

    from agent_team.sandbox import HIDE_ENV, SandboxPolicy, run_sandboxed

    runner_temp = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        commands = runner_temp / "_runner_file_commands"
        commands.mkdir()
        github_env = commands / "set_env_1"
        github_env.write_text("KEEP=1\n")
        work = tmp_path / "work"
        work.mkdir()
        script = f"cat {github_env} || echo hidden; echo 'X=1' >> {github_env} || echo refused"
        seen = run_sandboxed(["sh", "-c", script], workdir=work, policy=SandboxPolicy(),
                             timeout=30)
        assert "KEEP=1" in seen.output  # readable (never writable) unless hidden
        monkeypatch.setenv(HIDE_ENV, str(runner_temp))
        hidden = run_sandboxed(["sh", "-c", script], workdir=work, policy=SandboxPolicy(),
                               timeout=30)
        assert "hidden" in hidden.output and "KEEP=1" not in hidden.output, hidden.output
        assert github_env.read_text() == "KEEP=1\n"
    finally:
        shutil.rmtree(runner_temp)
