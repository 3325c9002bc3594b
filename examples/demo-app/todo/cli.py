"""Command-line interface: python -m todo add|list|done."""

from __future__ import annotations

import argparse
from pathlib import Path

from todo.store import TodoStore


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="todo")
    parser.add_argument("--file", type=Path, default=Path("todo.json"))
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add", help="add an item")
    add.add_argument("title")
    commands.add_parser("list", help="list pending items")
    done = commands.add_parser("done", help="mark an item done")
    done.add_argument("id", type=int)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = TodoStore(args.file)
    if args.command == "add":
        item = store.add(args.title)
        print(f"added {item.id}: {item.title}")
    elif args.command == "list":
        for item in store.pending():
            print(f"{item.id}. {item.title}")
    elif args.command == "done":
        item = store.complete(args.id)
        print(f"done {item.id}: {item.title}")
    return 0
