"""Min / median / max of the headline figures over several runs of scaling.py or makespan.py.

Each figure the README quotes comes from here, over the JSON files of three runs:

    for i in 1 2 3; do python benchmarks/scaling.py --json benchmarks/results/scaling-$i.json; done
    python benchmarks/summarize.py benchmarks/results/scaling-*.json

    for i in 1 2 3; do python benchmarks/makespan.py --skip-orchestrator \\
        --json benchmarks/results/makespan-$i.json; done
    python benchmarks/summarize.py benchmarks/results/makespan-*.json
"""

from __future__ import annotations

import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

Figure = tuple[str, Callable[[dict[str, Any]], float], str]


def _floor(files: int, key: str) -> Callable[[dict[str, Any]], float]:
    def pick(run: dict[str, Any]) -> float:
        for size in run["floor"]:
            if size["files"] == files:
                if key in ("orchestrator", "marginal", "fixed"):
                    return float(size[f"{key}_s"])
                if key.startswith("marginal/"):
                    return float(size["marginal_s"]) / float(size["floor_s"][key[9:]])
                if key.startswith("/"):
                    return float(size["orchestrator_s"]) / float(size["floor_s"][key[1:]])
                return float(size["floor_s"][key])
        raise KeyError(f"no {files}-file repository in this run")

    return pick


def scaling_figures(runs: list[dict[str, Any]]) -> list[Figure]:
    sizes = sorted(int(k) for k in runs[0]["plan"])
    figures: list[Figure] = [
        ("per-task wall time, 500 / 50 tasks (target <= 1.25)",
         lambda r: float(r["plan_ratio"]), "{:.2f}"),
    ]
    for size in sizes:
        figures.append((f"per-task wall time at {size} tasks (s)",
                        lambda r, s=size: float(r["plan"][str(s)]["per_task_s"]), "{:.3f}"))
    for size in sizes:
        if size in (10, 50, 200):
            figures.append((f"state writes per task at {size} tasks",
                            lambda r, s=size: float(r["plan"][str(s)]["writes_per_task"]),
                            "{:.1f}"))
            figures.append((f"state KB written per task at {size} tasks",
                            lambda r, s=size: r["plan"][str(s)]["bytes_per_task"] / 1024,
                            "{:.1f}"))
    for files in sorted({size["files"] for size in runs[0]["floor"]}):
        figures += [
            (f"orchestrator per task, {files} files (s)", _floor(files, "orchestrator"),
             "{:.3f}"),
            (f"git lean sequence per task, {files} files (s)", _floor(files, "lean"), "{:.3f}"),
            (f"git pooled worktree per task, {files} files (s)", _floor(files, "pool"),
             "{:.3f}"),
            (f"git full sequence per task, {files} files (s)", _floor(files, "full"), "{:.3f}"),
            (f"orchestrator marginal cost of one more task, {files} files (s)",
             _floor(files, "marginal"), "{:.3f}"),
            (f"orchestrator fixed cost per run, {files} files (s)", _floor(files, "fixed"),
             "{:.2f}"),
            (f"orchestrator / lean git, {files} files (target <= 2)", _floor(files, "/lean"),
             "{:.2f}"),
            (f"orchestrator marginal / lean git, {files} files", _floor(files, "marginal/lean"),
             "{:.2f}"),
            (f"orchestrator / full git, {files} files", _floor(files, "/full"), "{:.2f}"),
        ]
    figures += [
        ("lock run: wall (s)", lambda r: float(r["lock"]["wall_s"]), "{:.2f}"),
        ("lock run: threads' wait for the repository lock (s)",
         lambda r: float(r["lock"]["lock_wait_s"]), "{:.2f}"),
        ("lock run: lock held (s)", lambda r: float(r["lock"]["lock_held_s"]), "{:.2f}"),
    ]
    return figures


def makespan_figures(runs: list[dict[str, Any]]) -> list[Figure]:
    figures: list[Figure] = []
    for index, graph in enumerate(runs[0]["scheduler"]):
        figures.append((f"{graph['graph']}: sequential / critical path",
                        lambda r, i=index: (r["scheduler"][i]["sequential_s"]
                                            / r["scheduler"][i]["critical_path_s"]), "{:.2f}"))
        figures.append((f"{graph['graph']}: guide's approach, 4 workers / critical path",
                        lambda r, i=index: (r["scheduler"][i]["guide_s"]["4"]
                                            / r["scheduler"][i]["critical_path_s"]), "{:.2f}"))
        for workers in ("inf", "16", "4", "1"):
            figures.append((
                f"{graph['graph']}: makespan / critical path, w={workers}"
                + (" (target <= 1.05)" if workers == "inf" else ""),
                lambda r, i=index, w=workers: (r["scheduler"][i]["scheduler_s"][w]
                                               / r["scheduler"][i]["critical_path_s"]),
                "{:.2f}"))
    return figures


def main(paths: list[str]) -> None:
    if not paths:
        sys.exit("usage: summarize.py RESULT.json [RESULT.json ...] (all from one benchmark)")
    runs = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    kinds = {run["benchmark"] for run in runs}
    if len(kinds) != 1:
        sys.exit(f"the files come from different benchmarks: {', '.join(sorted(kinds))}")
    kind = kinds.pop()
    figures = {"scaling": scaling_figures, "makespan": makespan_figures}[kind](runs)
    print(f"{kind}: {len(runs)} run(s): {', '.join(paths)}")
    print(f"commands: {'; '.join(sorted({run['command'] for run in runs}))}\n")
    print("| figure | min | median | max |")
    print("|---|---|---|---|")
    for name, pick, fmt in figures:
        values = [pick(run) for run in runs]
        print(f"| {name} | {fmt.format(min(values))} | "
              f"{fmt.format(statistics.median(values))} | {fmt.format(max(values))} |")


if __name__ == "__main__":
    main(sys.argv[1:])
