"""Worker processes in the job store: who runs, on which host, doing what, alive or gone.

`Workers` is `JobStore.workers`. A worker registers once, then beats its heart; one whose
heartbeat is older than `stale_after` seconds (by the database's clock) is shown as gone.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any

from sqlalchemy import Engine, delete, select, update

from .db import db_now, read_transaction, write_transaction
from .records import WorkerRecord
from .schema import workers
from .store_events import write_event

__all__ = ["DEFAULT_WORKER_STALE_S", "Workers"]

#: A worker whose heartbeat is older than this many seconds is shown as gone.
DEFAULT_WORKER_STALE_S = 30.0


class Workers:
    """Registering workers, their heartbeats, and which of them are alive."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, worker_id: str | None = None) -> str:
        """Record a worker process (host and pid) and return its id."""
        worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        with write_transaction(self.engine) as conn:
            conn.execute(delete(workers).where(workers.c.id == worker_id))
            conn.execute(workers.insert().values(
                id=worker_id, host=socket.gethostname(), pid=os.getpid(), status="idle",
                current_task_id=None, tasks_done=0, started_at=db_now(), heartbeat_at=db_now()))
            write_event(conn, "worker_started", f"pid {os.getpid()}", worker_id=worker_id)
        return worker_id

    def heartbeat(self, worker_id: str, *, status: str | None = None,
                  current_task_id: int | None = None, finished_task: bool = False) -> None:
        """Say the worker is alive, and what it does; `status` idle/busy/stopped."""
        values: dict[str, Any] = {"heartbeat_at": db_now()}
        if status is not None:
            values["status"] = status
            values["current_task_id"] = current_task_id
        if finished_task:
            values["tasks_done"] = workers.c.tasks_done + 1
        with write_transaction(self.engine) as conn:
            conn.execute(update(workers).where(workers.c.id == worker_id).values(**values))
            if status == "stopped":
                write_event(conn, "worker_stopped", "", worker_id=worker_id)

    def records(self, *, stale_after: float = DEFAULT_WORKER_STALE_S,
                include_stopped: bool = False) -> list[WorkerRecord]:
        """Every worker (stopped ones only when asked), oldest first."""
        with read_transaction(self.engine) as conn:
            now = float(conn.execute(select(db_now())).scalar_one())
            query = select(workers).order_by(workers.c.started_at)
            if not include_stopped:
                query = query.where(workers.c.status != "stopped")
            rows = conn.execute(query).mappings().all()
        return [WorkerRecord.from_row(r, now=now, stale_after=stale_after) for r in rows]

    def live(self, *, stale_after: float = DEFAULT_WORKER_STALE_S) -> list[WorkerRecord]:
        """Workers whose heartbeat is recent; the API runs tasks itself when there are none."""
        return [w for w in self.records(stale_after=stale_after) if w.alive]
