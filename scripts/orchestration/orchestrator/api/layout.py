"""Where a job's results live, and the live logs written there.

    workspace/job_<id>/
        repo/                           the job's git repository (fresh jobs only)
        depth_<d>/worker_<n>[_recursive]/   transcript.md, diff.patch, worker.log
        depth_<d>/LEVEL_<d>_REPORT.md
        logs/orchestrator.log           every event of the job tree, one line each, flushed
        logs/depth_<d>_worker_<n>.log   one worker's events
        reports/                        one report (Markdown, SVG timeline, JSON) per job
        state/job_<id>.json             the engine's state file of each job
        FINAL_RESULT.md                 all levels, with which worker created which file

Child jobs write into their root job's directory: one tree, one place to look.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from agent_team.redaction import redact


class JobLayout:
    """Paths of one job tree's directory."""

    def __init__(self, job_dir: Path) -> None:
        self.root = job_dir

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def state(self) -> Path:
        """The engine's state file of each job of the tree (outside every repository)."""
        return self.root / "state"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def final_result(self) -> Path:
        return self.root / "FINAL_RESULT.md"

    def depth_dir(self, depth: int) -> Path:
        return self.root / f"depth_{depth}"

    def level_report(self, depth: int) -> Path:
        return self.depth_dir(depth) / f"LEVEL_{depth}_REPORT.md"

    def worker_dir(self, depth: int, label: str, *, recursive: bool = False) -> Path:
        return self.depth_dir(depth) / f"worker_{label}{'_recursive' if recursive else ''}"

    def worker_log(self, depth: int, label: str) -> Path:
        return self.logs / f"depth_{depth}_worker_{label}.log"

    @property
    def orchestrator_log(self) -> Path:
        return self.logs / "orchestrator.log"


def describe_event(event: Mapping[str, Any]) -> str:
    """One readable line for an orchestrator event (the plain-text log format)."""
    kind = str(event.get("kind", ""))
    who = event.get("role") or ""
    task = event.get("task_id") or ""
    head = f"{who}@{task}" if who and task else (who or task or "orchestrator")
    if kind == "log":
        return f"{head}: {event.get('message', '')}"
    if kind == "model_call":
        usage = event.get("usage") or {}
        tokens = sum(int(v or 0) for v in usage.values()) if isinstance(usage, Mapping) else 0
        return f"{head}: model call turn {event.get('turn')} ({tokens} tokens)"
    if kind == "tool_call":
        error = " (error)" if event.get("is_error") else ""
        return f"{head}: tool {event.get('tool')}{error}"
    if kind == "task_status":
        error = f": {event.get('error')}" if event.get("error") else ""
        return f"{head}: status {event.get('status')}{error}"
    if kind == "commit":
        return f"{head}: commit {str(event.get('sha', ''))[:10]} ({len(event.get('files') or [])}"\
               " file(s))"
    extra = {k: v for k, v in event.items()
             if k not in ("kind", "ts", "run_id", "seq", "role", "task_id", "time", "t")}
    return f"{head}: {kind} {json.dumps(extra, default=str)[:500]}"


class LiveLogs:
    """Appends one line per event to orchestrator.log and the worker's own log, flushed at
    once so `tail -f` follows the run. Lines are JSON when logging is structured."""

    def __init__(self, layout: JobLayout, *, structured: bool) -> None:
        self.layout = layout
        self.structured = structured
        self._files: dict[Path, IO[str]] = {}
        self._lock = threading.Lock()
        layout.logs.mkdir(parents=True, exist_ok=True)

    def _write(self, path: Path, line: str) -> None:
        handle = self._files.get(path)
        if handle is None:
            handle = self._files[path] = path.open("a", encoding="utf-8")
        handle.write(line + "\n")
        handle.flush()

    def write(self, event: Mapping[str, Any], *, job_id: str, depth: int,
              worker: str | None) -> None:
        if self.structured:
            line = json.dumps({**event, "job_id": job_id, "depth": depth, "worker": worker},
                              default=str)
        else:
            stamp = str(event.get("ts") or event.get("time") or "")
            line = f"{stamp} [job {job_id} depth {depth}] {describe_event(event)}"
        line = redact(line)
        with self._lock:
            self._write(self.layout.orchestrator_log, line)
            if worker is not None:
                self._write(self.layout.worker_log(depth, worker), line)

    def close(self) -> None:
        with self._lock:
            for handle in self._files.values():
                handle.close()
            self._files.clear()
