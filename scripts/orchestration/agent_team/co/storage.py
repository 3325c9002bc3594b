"""A key-value store for `co`'s own records (checkpoints, run records), behind one interface.

The default keeps one JSON file per key inside the repository's git directory, so records never
show in `git status` and never reach a commit. A database or a remote store plugs in by
implementing `save` and `load`.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..fsutil import write_atomic

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,200}")


class StorageInterface(ABC):
    """Where `co` keeps a JSON-compatible value under a string key."""

    @abstractmethod
    def save(self, key: str, value: Any) -> None:
        """Store `value` (JSON-compatible) under `key`, replacing what was there."""

    @abstractmethod
    def load(self, key: str) -> Any:
        """The value under `key`, or None when there is none."""


class JsonFileStorage(StorageInterface):
    """One JSON file per key under `root`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        if not _KEY.fullmatch(key) or ".." in key:
            raise ValueError(f"invalid storage key {key!r}")
        return self.root / f"{key}.json"

    def save(self, key: str, value: Any) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")

    def load(self, key: str) -> Any:
        try:
            return json.loads(self._path(key).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None


class MemoryStorage(StorageInterface):
    """A dict; for tests and throwaway runs."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def save(self, key: str, value: Any) -> None:
        self.data[key] = json.loads(json.dumps(value))

    def load(self, key: str) -> Any:
        value = self.data.get(key)
        return None if value is None else json.loads(json.dumps(value))
