"""How a run ends: the summary (console, Markdown, JSON) and the run's record closed, for a
finished run and for one that stopped (budget, Ctrl-C, a custom guard)."""

from __future__ import annotations

import time
from typing import Any

from . import report as report_mod
from .errors import EXIT_BUDGET, EXIT_INTERRUPTED, RunInterrupted, UsageLimitExceeded
from .records import note, set_feature_status
from .run_context import RunContext
from .state_schema import utc_now
from .team import Team


def finish(team: Team, run: RunContext, status: str, exit_code: int) -> dict[str, Any]:
    """Write the summary and close the run in the store; returns the summary."""
    duration = time.monotonic() - run.started if run.started else 0.0
    snapshot = run.store.read()
    files = None
    if run.feature_branch and team.git.branch_exists(run.feature_branch):
        files = team.git.history.changed_files(run.base_commit, run.feature_branch)
    summary = report_mod.build_summary(snapshot, run_id=run.run_id, duration_seconds=duration,
                                       status=status, exit_code=exit_code, files_changed=files,
                                       warnings=run.warnings)
    paths = report_mod.write_reports(team.project_dir, run.run_id, summary)

    run.store.record({"op": "run", "run_id": run.run_id, "fields": {
        "status": status, "exit_code": exit_code, "finished_at": utc_now(),
        "report": str(paths["markdown"].relative_to(team.project_dir)),
        "summary": report_mod.compact(summary), "stop_reason": run.stop.kind}})
    team.output(report_mod.render_console(summary))
    run.log(f"Report written to {paths['markdown']}")
    run.events.emit("run_finished", status=status, exit_code=exit_code)
    run.finished = True
    return summary


def stop(team: Team, run: RunContext) -> dict[str, Any]:
    """End the run because it was asked to stop; work so far is on the task branches."""
    error = run.stop.error
    if isinstance(error, RunInterrupted):
        set_feature_status(run, "stopped", stop_reason="interrupted by the user")
        note(run, "orchestrator", None, "stopped", "interrupted by the user")
        run.log("Stopped. Work so far is committed on the task branches; continue with "
                "--resume.")
        return finish(team, run, "stopped", EXIT_INTERRUPTED)
    limit = error.limit if isinstance(error, UsageLimitExceeded) else "stop"
    value = error.value if isinstance(error, UsageLimitExceeded) else 0
    maximum = error.maximum if isinstance(error, UsageLimitExceeded) else 0
    reason = f"budget: {error}"
    run.events.emit("budget_stop", limit=limit, value=value, maximum=maximum)
    set_feature_status(run, "stopped", stop_reason=reason)
    note(run, "orchestrator", None, "stopped", reason,
         {"limit": limit, "value": value, "maximum": maximum})
    run.log(f"Stopped. {error} Work so far is committed on the task branches; raise the "
            "limit and continue with --resume.")
    return finish(team, run, "stopped", EXIT_BUDGET)
