"""In-memory and JSON-file storage for to-do items."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Item:
    id: int
    title: str
    done: bool = False


class TodoStore:
    """Keeps items in order of creation; optionally persists them to a JSON file."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.items: list[Item] = []
        if path is not None and path.exists():
            self.items = [Item(**raw) for raw in json.loads(path.read_text())]

    def add(self, title: str) -> Item:
        if not title.strip():
            raise ValueError("title must not be empty")
        item = Item(id=len(self.items) + 1, title=title.strip())
        self.items.append(item)
        self._save()
        return item

    def complete(self, item_id: int) -> Item:
        item = self.get(item_id)
        item.done = True
        self._save()
        return item

    def get(self, item_id: int) -> Item:
        for item in self.items:
            if item.id == item_id:
                return item
        raise KeyError(f"no item with id {item_id}")

    def pending(self) -> list[Item]:
        return [item for item in self.items if not item.done]

    def _save(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps([asdict(i) for i in self.items], indent=2))
