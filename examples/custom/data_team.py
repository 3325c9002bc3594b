#!/usr/bin/env python3
"""A team of your own: a data engineer and an ML engineer instead of the default roles.

    python examples/custom/data_team.py --demo
    python examples/custom/data_team.py --feature "..." --project-dir ~/projects/my-pipeline

`get_agent_types()` is the whole customisation: the manager is told about these two roles
only, its plan may assign tasks to nothing else, and each agent gets its role's system prompt.
The demo copies examples/data-app (a CSV of daily sales and a loader) into a temporary git
repository and replays a scripted session in which both roles really edit files.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "orchestration"))

import click  # noqa: E402
import git  # noqa: E402
from agent_team.cli import EXAMPLES_DIR, common_options, resolve_run_inputs, run_cli  # noqa: E402
from file_based_orchestrator import FileBasedOrchestrator  # noqa: E402

DATA_APP = EXAMPLES_DIR / "data-app"
DEMO_SESSION = EXAMPLES_DIR / "sessions" / "data-team-demo.json"

DATA_ENGINEER_SYSTEM = (
    "You are a data engineer. You own how data gets from raw files into the shape the rest of "
    "the team uses: loaders, validation of columns and types, cleaning, and feature tables. "
    "Write transformations as pure functions over rows with explicit column names, keep them "
    "reproducible, never modify raw data files in place, and pin the output of every "
    "transformation with a test on real or small fixture data."
)
ML_ENGINEER_SYSTEM = (
    "You are an ML engineer. You own models and their evaluation: training code, metrics, "
    "baselines and how a model is served or called. Prefer the simplest model that answers "
    "the question, make training deterministic, report the metric you measured (never one you "
    "expect), and write tests that check the model learns what the data shows."
)


class DataEngineerOrchestrator(FileBasedOrchestrator):
    """The file-based workflow with a data team: the manager plans for these roles only."""

    orchestrator_name = "data-team"

    def get_agent_types(self) -> dict[str, dict[str, Any]]:
        return {
            "data-engineer": {
                "system": DATA_ENGINEER_SYSTEM,
                "specialties": ["pipelines", "ETL", "data modeling", "data validation",
                                "feature tables"],
            },
            "ml-engineer": {
                "system": ML_ENGINEER_SYSTEM,
                "specialties": ["model training", "evaluation metrics", "deployment"],
            },
        }


def prepare_data_demo() -> tuple[Path, Path, str]:
    """Copy the data app into a fresh git repo; return (project, session file, feature)."""
    feature = json.loads(DEMO_SESSION.read_text(encoding="utf-8"))["feature"]
    target = Path(tempfile.mkdtemp(prefix="agent-team-data-demo-")) / "sales"
    shutil.copytree(DATA_APP, target,
                    ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache", ".ruff_cache"))
    repo = git.Repo.init(target, initial_branch="main")
    with repo.config_writer() as writer:
        writer.set_value("user", "name", "Demo User")
        writer.set_value("user", "email", "demo@example.com")
        writer.set_value("commit", "gpgsign", "false")
    repo.git.add("--all")
    repo.git.commit("-m", "Daily sales data and loader")
    return target, DEMO_SESSION, str(feature)


@click.command()
@common_options
@click.option("--max-workers", type=click.IntRange(1, 64),
              help="Most agents working at once (default: coordination.max_workers, 3).")
def main(max_workers: int | None, **options: Any) -> None:
    """Plan a data feature with a manager and build it with data and ML engineers."""

    def run() -> int:
        if options["demo"]:
            if options["project_dir"] is not None:
                raise click.UsageError("--demo makes its own project; drop --project-dir.")
            project_dir, session, feature = prepare_data_demo()
            click.echo(f"[Orchestrator] Demo project: {project_dir}")
            provider = "scripted"
            feature = options["feature"] or feature
            session = options["session"] or session
        else:
            feature, project_dir, provider, session = resolve_run_inputs(
                options["feature"], options["project_dir"], False, DEMO_SESSION.name,
                options["api_provider"], options["session"],
            )
        orchestrator = DataEngineerOrchestrator(
            project_dir, max_workers=max_workers, api_provider=provider,
            model_name=options["model_name"], base_url=options["base_url"], session=session,
            config_path=options["config_path"], test_command=options["test_command"],
            max_iterations=options["max_iterations"],
        )
        summary = orchestrator.run(feature)
        click.echo(f"[Orchestrator] Result: branch {summary['feature_branch']} in {project_dir}")
        return int(summary["exit_code"])

    run_cli(run)


if __name__ == "__main__":
    main()
