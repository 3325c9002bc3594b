"""The job store's event log: what happened to jobs, tasks and workers, newest first.

`Events` is `JobStore.events`. `write_event` adds one inside a transaction the caller already
holds, so a change and its event commit together.
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, select

from .db import db_now, read_transaction, write_transaction
from .records import EventRecord
from .schema import events

__all__ = ["Events", "write_event"]


def write_event(conn: Connection, kind: str, message: str, *, job_id: str | None = None,
                task_id: int | None = None, worker_id: str | None = None) -> None:
    conn.execute(events.insert().values(job_id=job_id, task_id=task_id, worker_id=worker_id,
                                        kind=kind, message=message[:1000], created_at=db_now()))


class Events:
    """Adding an event in a transaction of its own, and reading the latest ones."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, kind: str, message: str = "", *, job_id: str | None = None,
            task_id: int | None = None, worker_id: str | None = None) -> None:
        with write_transaction(self.engine) as conn:
            write_event(conn, kind, message, job_id=job_id, task_id=task_id,
                        worker_id=worker_id)

    def recent(self, *, limit: int = 20, job_id: str | None = None) -> list[EventRecord]:
        """Newest first."""
        query = select(events).order_by(events.c.id.desc()).limit(limit)
        if job_id is not None:
            query = query.where(events.c.job_id == job_id)
        with read_transaction(self.engine) as conn:
            return [EventRecord.from_row(row) for row in conn.execute(query).mappings()]
