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

from pathlib import Path
from typing import Any

import click
from agent_team.cli import (
    EXAMPLES_DIR,
    common_options,
    max_workers_option,
    orchestrator_options,
    prepare_demo,
    run_cli,
    run_inputs,
)
from file_based_orchestrator import FileBasedOrchestrator

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


def prepare_data_demo(session_name: str = DEMO_SESSION.name) -> tuple[Path, Path, str]:
    """Copy the data app into a fresh git repo; return (project, session file, feature)."""
    return prepare_demo(session_name, DATA_APP, project_name="sales",
                        message="Daily sales data and loader")


@click.command()
@common_options
@max_workers_option
def main(max_workers: int | None, **options: Any) -> None:
    """Plan a data feature with a manager and build it with data and ML engineers."""

    def run() -> int:
        feature, project_dir, provider, session = run_inputs(
            options, DEMO_SESSION.name, prepare=prepare_data_demo
        )
        orchestrator = DataEngineerOrchestrator(
            project_dir, max_workers=max_workers,
            **orchestrator_options(options, provider, session),
        )
        summary = orchestrator.run(feature)
        click.echo(f"[Orchestrator] Result: branch {summary['feature_branch']} in {project_dir}")
        return int(summary["exit_code"])

    run_cli(run)


if __name__ == "__main__":
    main()
