"""`co`: the agent team's one command line (backlog, runs, checkpoints, quality, set-up).

    python scripts/orchestration/co.py --help

Every mistake on the command line ends with a message naming it and exit code 2; a traceback
is a bug. Commands live in one module per group (shared pieces in base.py); this module holds
the group and attaches them.
"""

from __future__ import annotations

from pathlib import Path

import click

from . import audit_cmds, backlog_cmds, checkpoint_cmds, quality_cmds, run_cmd, setup_cmds
from .base import BadInput, CoContext, errors_as_click
from .settings import configure_logging

__all__ = ["BadInput", "CoContext", "main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="config.json (default: $ORCHESTRATOR_CONFIG, else .ai-agents/config.json).")
@click.option("--api-provider", type=click.Choice(["anthropic", "openai", "scripted"]),
              help="Model provider (default: chosen from which API key is set).")
@click.option("--session", type=click.Path(dir_okay=False, path_type=Path),
              help="Session file replayed by --api-provider scripted.")
@click.option("--model", "model_name", help="Model id for the workers (models.worker.model).")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, api_provider: str | None,
         session: Path | None, model_name: str | None) -> None:
    """Hand the project's task backlog to a team of AI agents; get tested, merged branches."""
    with errors_as_click():
        configure_logging()
    ctx.obj = CoContext(config_path, api_provider, session, model_name)


for _module in (backlog_cmds, run_cmd, checkpoint_cmds, quality_cmds, audit_cmds, setup_cmds):
    for _command in _module.COMMANDS:
        main.add_command(_command)


def run() -> None:
    """Entry point of scripts/orchestration/co.py and the `co` console script."""
    main(prog_name="co")


if __name__ == "__main__":
    run()
