"""JSON values by key on the job store's database: `co`'s `StorageInterface` on SQL.

`KeyValues` is `JobStore.kv`; the REST service keeps each job's outcome in it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, delete, select

from ..co.storage import StorageInterface
from .db import db_now, read_transaction, write_transaction
from .schema import kv

__all__ = ["KeyValues"]


class KeyValues(StorageInterface):
    """`save` and `load` of JSON values, one row per key."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, key: str, value: Any) -> None:
        """Store a JSON value under `key` (replacing any earlier one)."""
        with write_transaction(self.engine) as conn:
            conn.execute(delete(kv).where(kv.c.key == key))
            conn.execute(kv.insert().values(key=key, value=value, updated_at=db_now()))

    def load(self, key: str, default: Any = None) -> Any:
        with read_transaction(self.engine) as conn:
            row = conn.execute(select(kv.c.value).where(kv.c.key == key)).first()
        return default if row is None else row.value
