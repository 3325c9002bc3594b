"""Tests in a worktree import the worktree's code, even when the project is installed editable.

`pip install -e .` points the interpreter at the user's checkout (a `__editable__*.pth` path
line or finder mapping, a `.egg-link`, or a `direct_url.json` marked editable). Tests run in an
agent's worktree would then import the checkout, so a correct change fails and a broken one
passes. Each source root of such an install is mapped to the same place in the worktree and put
first on PYTHONPATH, ahead of site-packages and of any editable finder.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlparse

__all__ = ["editable_environment", "editable_source_roots", "interpreter_for"]

_FINDER_PATH = re.compile(r"""['"]([^'"]+)['"]""")
_SITE_SCRIPT = (
    "import json, site, sys; "
    "paths = site.getsitepackages() if hasattr(site, 'getsitepackages') else []; "
    "paths += [site.getusersitepackages()]; print(json.dumps(paths))"
)


def interpreter_for(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The Python that `argv` runs: itself, a script's shebang interpreter, or ours."""
    if not argv:
        return sys.executable
    program = argv[0]
    if Path(program).name.startswith("python"):
        return program
    path = Path(program)
    if not path.is_absolute() and os.sep not in program:
        for directory in env.get("PATH", "").split(os.pathsep):
            if directory and (Path(directory) / program).is_file():
                path = Path(directory) / program
                break
    try:
        with path.open("rb") as handle:
            first = handle.readline(256).decode("utf-8", "replace")
    except OSError:
        return sys.executable
    if first.startswith("#!") and "python" in first:
        interpreter = first[2:].split()[0]
        if Path(interpreter).name != "env":
            return interpreter
    return sys.executable


@lru_cache(maxsize=16)
def _site_dirs(interpreter: str) -> tuple[Path, ...]:
    try:
        done = subprocess.run([interpreter, "-c", _SITE_SCRIPT], capture_output=True,
                              text=True, timeout=60, check=False)
        return tuple(Path(p) for p in json.loads(done.stdout) if Path(p).is_dir())
    except (OSError, ValueError, subprocess.SubprocessError):
        return ()


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _roots_in_site(site: Path, checkout: Path) -> set[Path]:
    roots: set[Path] = set()
    for entry in site.iterdir():
        name = entry.name
        try:
            if name.endswith((".pth", ".egg-link")):
                lines = entry.read_text(encoding="utf-8", errors="replace").splitlines()
                if name.endswith(".egg-link"):
                    lines = lines[:1]  # the second line is a relative path back
                for line in lines:
                    path = Path(line.strip())
                    if not line.startswith(("import", "#")) and path.is_absolute():
                        roots.add(path.resolve())
            elif name.startswith("__editable__") and name.endswith("_finder.py"):
                text = entry.read_text(encoding="utf-8", errors="replace")
                mapping = text.split("MAPPING", 1)[1].split("\n", 1)[0] if "MAPPING" in text \
                    else ""
                for found in _FINDER_PATH.findall(mapping):
                    package = Path(found)
                    if package.is_absolute():
                        roots.add(package.resolve().parent)
            elif name.endswith(".dist-info") and (entry / "direct_url.json").is_file():
                data = json.loads((entry / "direct_url.json").read_text(encoding="utf-8"))
                if data.get("dir_info", {}).get("editable") and data.get("url", "").startswith(
                        "file://"):
                    project = Path(unquote(urlparse(data["url"]).path)).resolve()
                    if _inside(project, checkout):
                        source = project / "src"
                        roots.add(source if source.is_dir() else project)
        except (OSError, ValueError, IndexError):
            continue
    return {root for root in roots if _inside(root, checkout)}


def editable_source_roots(checkout: Path, interpreter: str) -> list[Path]:
    """Directories inside `checkout` that `interpreter` imports from through editable installs."""
    checkout = checkout.resolve()
    roots: set[Path] = set()
    for site in _site_dirs(interpreter):
        roots |= _roots_in_site(site, checkout)
    # the checkout's own directory when it holds packages directly is found too; deeper first
    return sorted(roots, key=lambda p: (-len(p.parts), str(p)))


def editable_environment(checkout: Path, worktree: Path, argv: Sequence[str],
                         env: Mapping[str, str]) -> dict[str, str]:
    """PYTHONPATH that makes `argv`, run in `worktree`, import the worktree's sources.

    Empty when the worktree is the checkout or no editable install points into the checkout.
    """
    checkout, worktree = checkout.resolve(), worktree.resolve()
    if checkout == worktree:
        return {}
    roots = editable_source_roots(checkout, interpreter_for(argv, env))
    mapped = [str(worktree / root.relative_to(checkout)) for root in roots]
    mapped = [path for path in mapped if Path(path).is_dir()]
    if not mapped:
        return {}
    existing = env.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join([*mapped, *([existing] if existing else [])])}
