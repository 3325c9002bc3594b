"""The usage guide's seven customisation examples, run as a user would paste them.

Only the guide's own placeholders are filled in (an example's helper phases such as
`security_scan` are the user's to write, so the tests write them), and every class body is the
guide's code. Each runs a real orchestration on a real repository with the scripted model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import pytest
from agent_team.errors import EXIT_BUDGET, EXIT_OK, UsageLimitExceeded
from agent_team.scripted import ScriptedModel
from file_based_orchestrator import FileBasedOrchestrator

from tests.conftest import make_repo
from tests.orchestration_helpers import (
    PASSING_TESTS,
    branches,
    diamond_session,
    file_at,
    finish_call,
    integration_turn,
    plan_turn,
    read_state,
    task,
    tasks_by_id,
    tool_turn,
    write_and_finish,
    write_call,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    make_repo(path, {"README.md": "# app\n"})
    return path


def build(cls: type, project: Path, agents: dict[str, Any], **options: Any) -> Any:
    model = ScriptedModel(agents)
    orchestrator = cls(project, model=model, output=lambda line: None,
                       test_command=PASSING_TESTS, **options)
    orchestrator.model = model
    return orchestrator


# -- 1. MyCustomOrchestrator: phases before and after the base run ------------------------------


class MyCustomOrchestrator(FileBasedOrchestrator):
    """Custom workflow for your specific needs"""

    def run(self, feature):
        # Your custom phases
        print("Starting custom workflow...")

        # Phase 1: Design review
        design = self.architect_review(feature)

        # Phase 2: Security analysis
        security = self.security_scan(design)

        # Phase 3: Implementation (using base orchestrator)
        super().run(feature)

        # Phase 4: Performance testing
        perf = self.performance_test()

        return {
            "design": design,
            "security": security,
            "performance": perf
        }

    def architect_review(self, feature):
        """Custom phase: Architect reviews design"""
        system = "You are a software architect..."
        prompt = f"Review the design for: {feature}"
        return self.call_agent("architect", "architect", prompt, system)

    # The user's own phases, which the guide leaves to them.
    def security_scan(self, design):
        return self.call_agent("security", "security", f"Check this design: {design}",
                               "You are a security reviewer.")

    def performance_test(self):
        return self.call_agent("perf", "performance", "How fast is it?", "You measure speed.")


def custom_phase_agents() -> dict[str, Any]:
    return {
        "architect": [{"text": "Keep the CLI thin.", "usage": {"input_tokens": 100,
                                                                 "output_tokens": 10}}],
        "security": [{"text": "No secrets in code.", "usage": {"input_tokens": 50,
                                                                 "output_tokens": 5}}],
        "manager:plan": [plan_turn([task("A", "backend-dev")])],
        "backend-dev:A": write_and_finish("a.txt", "A\n"),
        "manager:integration": [integration_turn()],
        "performance": [{"text": "Fast enough.", "usage": {"input_tokens": 7,
                                                              "output_tokens": 3}}],
    }


def test_custom_phases_run_around_the_base_run_and_count_in_usage(project: Path) -> None:
    orchestrator = build(MyCustomOrchestrator, project, custom_phase_agents())

    result = orchestrator.run("Greeting feature")

    orchestrator.model.assert_complete()
    assert result == {"design": "Keep the CLI thin.", "security": "No secrets in code.",
                      "performance": "Fast enough."}
    assert file_at(project, "feature/greeting-feature", "a.txt") == "A\n"
    usage = read_state(project)["usage"]
    assert usage["by_agent"]["architect"]["input_tokens"] == 100
    assert usage["by_agent"]["security"]["input_tokens"] == 50
    assert usage["by_agent"]["performance"]["input_tokens"] == 7
    assert usage["api_calls"] == 7  # architect, security, plan, 2 agent turns, review, perf


def test_custom_phase_calls_are_held_to_the_budget(project: Path) -> None:
    orchestrator = build(MyCustomOrchestrator, project, custom_phase_agents(),
                         limits={"max_api_calls": 2})

    with pytest.raises(UsageLimitExceeded, match="max_api_calls"):  # the performance phase
        orchestrator.run("Greeting feature")

    state = read_state(project)
    assert state["current_feature"]["status"] == "stopped"
    assert "max_api_calls" in state["current_feature"]["stop_reason"]
    assert state["usage"]["api_calls"] == 2  # the two custom calls; the plan was refused
    assert "feature/greeting-feature" not in branches(project)


# -- 2. DataEngineerOrchestrator: roles of your own -----------------------------------------------


class DataEngineerOrchestrator(FileBasedOrchestrator):
    """Orchestrator with data engineering agents"""

    def get_agent_types(self):
        return {
            "data-engineer": {
                "system": "You are a data engineer...",
                "specialties": ["pipelines", "ETL", "data modeling"]
            },
            "ml-engineer": {
                "system": "You are an ML engineer...",
                "specialties": ["model training", "deployment"]
            }
        }


def test_custom_agent_types_are_what_the_manager_plans_with(project: Path) -> None:
    orchestrator = build(DataEngineerOrchestrator, project, {
        "manager:plan": [plan_turn([task("ETL", "data-engineer"),
                                    task("TRAIN", "ml-engineer", ["ETL"])])],
        "data-engineer:ETL": write_and_finish("etl.py", "rows = []\n"),
        "ml-engineer:TRAIN": write_and_finish("train.py", "model = None\n"),
        "manager:integration": [integration_turn()],
    })

    summary = orchestrator.run("Sales pipeline")

    assert summary["exit_code"] == EXIT_OK
    plan_prompt = next(c for c in orchestrator.model.calls if c.key == "manager:plan")
    assert "data-engineer: pipelines, ETL, data modeling" in plan_prompt.messages[0].content
    assert "backend-dev" not in plan_prompt.messages[0].content
    ml_system = next(c for c in orchestrator.model.calls if c.key == "ml-engineer:TRAIN").system
    assert ml_system.startswith("You are an ML engineer...")
    assert file_at(project, summary["feature_branch"], "train.py") == "model = None\n"


# -- 3. CostAwareOrchestrator: call_agent sees every call ---------------------------------------


class CostAwareOrchestrator(FileBasedOrchestrator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.total_tokens = 0
        self.token_budget = 500000  # 500k tokens
        self.seen = []  # the test's own record of who was called

    def call_agent(self, agent_id, role, prompt, system_prompt):
        # Estimate tokens (rough: 1 token ≈ 4 chars)
        estimated_tokens = (len(prompt) + len(system_prompt)) // 4

        if self.total_tokens + estimated_tokens > self.token_budget:
            raise Exception(f"Token budget exceeded: {self.total_tokens}/{self.token_budget}")

        response = super().call_agent(agent_id, role, prompt, system_prompt)

        # Track actual usage (if API provides it)
        self.total_tokens += estimated_tokens
        self.seen.append((agent_id, role))

        return response


def conflict_agents() -> dict[str, Any]:
    """Two tasks that write the same file: the merge conflicts and the manager resolves it."""
    return {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "frontend-dev"),
                                    task("C", "qa-tester", ["A", "B"])])],
        "backend-dev:A": [tool_turn(write_call("app.txt", "backend\n"), delay=0.3),
                          tool_turn(finish_call())],
        "frontend-dev:B": [tool_turn(write_call("app.txt", "frontend\n"), delay=0.3),
                           tool_turn(finish_call())],
        "manager:merge": [tool_turn(write_call("app.txt", "backend\nfrontend\n")),
                          tool_turn(finish_call(summary="Kept both."))],
        "qa-tester:C": write_and_finish("test_app.txt", "ok\n"),
        "manager:integration": [integration_turn()],
    }


def test_cost_aware_call_agent_sees_planning_agents_conflicts_and_review(project: Path) -> None:
    orchestrator = build(CostAwareOrchestrator, project, conflict_agents(), max_workers=2)

    summary = orchestrator.run("Shared file")

    assert summary["exit_code"] == EXIT_OK, summary
    seen = orchestrator.seen
    assert ("plan", "manager") in seen and ("integration", "manager") in seen
    assert seen.count(("A", "backend-dev")) == 2 and seen.count(("B", "frontend-dev")) == 2
    assert seen.count(("C", "qa-tester")) == 2
    assert ("merge", "manager") in seen  # the conflict resolution
    assert len(seen) == len(orchestrator.model.calls) == 10
    assert orchestrator.total_tokens > 0
    assert file_at(project, "feature/shared-file", "app.txt") == "backend\nfrontend\n"


def test_an_exception_from_call_agent_is_a_clean_budget_stop(project: Path) -> None:
    orchestrator = build(CostAwareOrchestrator, project, {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "backend-dev:A": [tool_turn(write_call("a.txt", "A\n")),
                          tool_turn(write_call("more.txt", "more\n")),
                          tool_turn(finish_call())],
        "qa-tester:B": write_and_finish("b.txt", "B\n"),
        "manager:integration": [integration_turn()],
    })
    original = orchestrator.call_agent

    def guarded(agent_id: str, role: str, prompt: str, system_prompt: str) -> str:
        if len(orchestrator.seen) == 2:  # plan and A's first turn went through
            orchestrator.token_budget = 0
        return original(agent_id, role, prompt, system_prompt)

    orchestrator.call_agent = guarded

    summary = orchestrator.run("Guarded feature")

    assert summary["exit_code"] == EXIT_BUDGET
    state = read_state(project)
    assert state["current_feature"]["status"] == "stopped"
    assert "Token budget exceeded" in state["current_feature"]["stop_reason"]
    tasks = tasks_by_id(state)
    assert tasks["A"]["status"] == "pending" and tasks["B"]["status"] == "pending"
    # A's first turn wrote a.txt; the stop committed it on A's branch, nothing was lost.
    assert file_at(project, "feature/guarded-feature-agents/backend-dev/A", "a.txt") == "A\n"


# -- 4. call_agent_with_retry: the two-argument call and the loop helpers ------------------------


class RetryingOrchestrator(FileBasedOrchestrator):
    def call_agent_with_retry(self, agent_id, task, max_retries=3):
        """Call agent with loop detection"""

        for attempt in range(max_retries):
            response = self.call_agent(agent_id, task)

            # Check if agent is stuck
            if self._is_repetitive(response, agent_id):
                print(f"⚠️  Agent {agent_id} stuck, escalating to manager")

                # Have manager provide guidance
                guidance = self.manager_resolve(task, response)

                # Retry with guidance
                task["additional_context"] = guidance
                continue

            return response

        raise Exception(f"Agent {agent_id} failed after {max_retries} attempts")


def test_call_agent_with_retry_escalates_a_repeated_answer(project: Path) -> None:
    orchestrator = build(RetryingOrchestrator, project, {
        "backend-dev:T1": [{"text": "Which database?"}, {"text": "Which database?"},
                           {"text": "Using SQLite as advised."}],
        "manager:guidance-T1": [{"text": "Use SQLite."}],
    })
    work = {"task_id": "T1", "description": "Store the items", "assigned_to": "backend-dev",
            "dependencies": []}

    first = orchestrator.call_agent_with_retry("T1", work)
    second = orchestrator.call_agent_with_retry("T1", work)

    assert first == "Which database?"
    assert second == "Using SQLite as advised."
    assert work["additional_context"] == "Use SQLite."
    calls = orchestrator.model.calls
    assert [c.key for c in calls] == ["backend-dev:T1", "backend-dev:T1",
                                      "manager:guidance-T1", "backend-dev:T1"]
    assert "Guidance: Use SQLite." in calls[-1].messages[0].content
    assert "Which database?" in calls[2].messages[0].content


def test_call_agent_with_retry_gives_up_after_max_retries(project: Path) -> None:
    orchestrator = build(RetryingOrchestrator, project, {
        "backend-dev:T1": [{"text": "Same."}] * 3,
        "manager:guidance-T1": [{"text": "Try harder."}] * 2,
    })
    work = {"task_id": "T1", "description": "Loop", "assigned_to": "backend-dev"}
    assert orchestrator.call_agent_with_retry("T1", work, max_retries=1) == "Same."

    with pytest.raises(Exception, match="Agent T1 failed after 2 attempts"):
        orchestrator.call_agent_with_retry("T1", work, max_retries=2)


# -- 5. ParallelOrchestrator: worktrees keyed by agent -------------------------------------------


class ParallelOrchestrator(FileBasedOrchestrator):
    def setup_worktrees(self, tasks):
        """Create worktree for each agent"""
        worktrees = {}

        for task in tasks:
            agent_id = task["assigned_to"]
            branch = task["branch"]

            # Create worktree
            worktree_path = self.project_dir.parent / f"worktrees/{agent_id}"
            subprocess.run([
                "git", "worktree", "add",
                str(worktree_path),
                "-b", branch
            ], cwd=self.project_dir)

            worktrees[agent_id] = worktree_path

        return worktrees

    def execute_task_in_worktree(self, task, worktree):
        """Execute task in isolated worktree"""
        # Agent works in their own directory
        # No conflicts with other agents!
        return super().execute_task_in_worktree(task, worktree)


def test_worktrees_keyed_by_agent_from_a_subclass(project: Path) -> None:
    orchestrator = build(ParallelOrchestrator, project, {
        "manager:plan": [plan_turn([task("A", "backend-dev"),
                                    task("B", "frontend-dev", ["A"])])],
        "backend-dev:A": write_and_finish("api.txt", "api\n"),
        "frontend-dev:B": [tool_turn(("read_file", {"path": "api.txt"})),
                           tool_turn(write_call("ui.txt", "ui\n")),
                           tool_turn(finish_call())],
        "manager:integration": [integration_turn()],
    }, max_workers=1)

    summary = orchestrator.run("Agent worktrees")

    assert summary["exit_code"] == EXIT_OK, summary
    feature = summary["feature_branch"]
    assert file_at(project, feature, "api.txt") == "api\n"
    assert file_at(project, feature, "ui.txt") == "ui\n"
    read = next(c for c in orchestrator.model.calls if c.key == "frontend-dev:B"
                and len(c.messages) > 2)
    assert "api" in read.messages[-1].content  # B's worktree held A's merged work
    assert not (project.parent / "worktrees" / "backend-dev").exists()


def test_a_failing_seam_is_recorded_on_its_task(project: Path) -> None:
    class Broken(FileBasedOrchestrator):
        def setup_worktrees(self, tasks):
            raise RuntimeError("disk quota reached")

    orchestrator = build(Broken, project, {
        "manager:plan": [plan_turn([task("A", "backend-dev"), task("B", "qa-tester", ["A"])])],
        "manager:integration": [integration_turn()],
    })

    summary = orchestrator.run("Broken seam")

    tasks = tasks_by_id(read_state(project))
    assert summary["exit_code"] == 1
    assert tasks["A"]["status"] == "failed"
    assert tasks["A"]["error"] == "RuntimeError: disk quota reached"
    assert tasks["B"]["status"] == "blocked" and "A" in tasks["B"]["error"]
    report = (project / read_state(project)["runs"][-1]["report"]).read_text(encoding="utf-8")
    assert "disk quota reached" in report


# -- 6. TrueParallelOrchestrator: a driver of your own -------------------------------------------


class TrueParallelOrchestrator(FileBasedOrchestrator):
    def run_parallel(self, feature, max_workers=3):
        """Execute independent tasks in parallel"""

        # Phase 1: Manager creates tasks
        tasks = self.manager_create_tasks(feature)

        # Phase 2: Group tasks by dependencies
        independent_tasks = [t for t in tasks if not t.get("dependencies")]
        dependent_tasks = [t for t in tasks if t.get("dependencies")]

        results = []

        # Execute independent tasks in parallel
        with ThreadPoolExecutor(max_workers=max_workers) as executor:
            futures = {
                executor.submit(self.agent_execute_task, task): task
                for task in independent_tasks
            }

            for future in as_completed(futures):
                task = futures[future]
                try:
                    result = future.result()
                    results.append(result)
                    print(f"✅ {task['task_id']} completed")
                except Exception as e:
                    print(f"❌ {task['task_id']} failed: {e}")

        # Execute dependent tasks after dependencies complete
        for task in dependent_tasks:
            if self._dependencies_satisfied(task, results):
                result = self.agent_execute_task(task)
                results.append(result)

        return results


def test_a_subclass_driver_runs_inside_run(project: Path) -> None:
    orchestrator = build(TrueParallelOrchestrator, project, diamond_session())

    summary = orchestrator.run("Own driver")

    assert summary["exit_code"] == EXIT_OK, summary
    for name in ("a.txt", "b.txt", "c.txt"):
        assert file_at(project, "feature/own-driver", name) is not None
    assert all(t["status"] == "completed" for t in read_state(project)["tasks"])


def test_a_subclass_driver_called_directly_creates_the_feature_branch(project: Path) -> None:
    orchestrator = build(TrueParallelOrchestrator, project, diamond_session())

    results = orchestrator.run_parallel("Direct driver", max_workers=2)
    orchestrator.close()

    assert sorted(r["task_id"] for r in results) == ["A", "B", "C"]
    assert all(r["status"] == "completed" for r in results)
    assert file_at(project, "feature/direct-driver", "c.txt") == "C\n"


# -- 7. Importable from anywhere after the install command --------------------------------------


def test_the_orchestrators_import_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = ("from file_based_orchestrator import FileBasedOrchestrator\n"
            "from simple_orchestrator import SimpleOrchestrator\n"
            "import agent_team, file_based_orchestrator\n"
            "print(file_based_orchestrator.__file__)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(ROOT / "scripts" / "orchestration")
