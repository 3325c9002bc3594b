"""No class of the package grows past about 25 methods: a bigger one gets split by concern.

Counts every `def` in a class body (properties, static and private methods included), read
with `ast` from the source, so nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCES = Path(__file__).resolve().parents[1] / "scripts"
LIMIT = 25


def method_counts(root: Path) -> dict[str, int]:
    """`path:Class` -> how many functions its body defines, for every class under `root`."""
    counts: dict[str, int] = {}
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                defs = [item for item in node.body
                        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
                counts[f"{path.relative_to(root)}:{node.name}"] = len(defs)
    return counts


def test_the_counter_counts_every_def_in_a_class_body(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text(
        "class A:\n"
        "    x = 1\n"
        "    def a(self): ...\n"
        "    @property\n"
        "    def b(self): ...\n"
        "    @staticmethod\n"
        "    def _c(): ...\n"
        "    async def d(self): ...\n"
        "    class Inner:\n"
        "        def e(self): ...\n"
        "def outside(): ...\n",
        encoding="utf-8",
    )
    assert method_counts(tmp_path) == {"m.py:A": 4, "m.py:Inner": 1}


def test_no_class_has_more_than_the_limit() -> None:
    counts = method_counts(SOURCES)
    assert "orchestration/agent_team/git_workspace.py:GitWorkspace" in counts
    too_big = {name: n for name, n in counts.items() if n > LIMIT}
    assert not too_big, (
        f"classes over {LIMIT} methods: {too_big}; split them along their concerns into "
        "objects they hold (see GitWorkspace.history, JobStore.workers, TeamState.file)"
    )
