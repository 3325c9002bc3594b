"""StorageInterface: where checkpoint and run records are kept (save/load by key)."""

from __future__ import annotations

from agent_team.co.storage import JsonFileStorage, MemoryStorage, StorageInterface

__all__ = ["JsonFileStorage", "MemoryStorage", "StorageInterface"]
