"""The scheduler runs jobs in dependency order, in parallel, and never holds a ready job back.

Timing claims are checked structurally from the times each job recorded itself: a job's start
minus the end of its last dependency (its "slack") must stay small. That proves no job waited for
anything but its own dependencies, which is what makes the makespan approach the critical path.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor

import pytest
from agent_team.models import Message
from agent_team.scheduler import (
    BLOCKED,
    COMPLETED,
    FAILED,
    SKIPPED,
    STOPPED_REASON,
    Job,
    ScheduleResult,
    critical_path_length,
    run_graph,
    topological_order,
)
from agent_team.scripted import ScriptedModel

from tests.orchestration_helpers import keyed

SLACK = 0.05


class Recorder:
    """An `execute` that sleeps a per-job latency and records when it really ran."""

    def __init__(
        self,
        latency: Mapping[str, float] | float = 0.05,
        *,
        fail: Iterable[str] = (),
        explode: Iterable[str] = (),
    ) -> None:
        self.latency = latency
        self.fail = set(fail)
        self.explode = set(explode)
        self.starts: dict[str, float] = {}
        self.ends: dict[str, float] = {}
        self.lock = threading.Lock()

    def __call__(self, job: Job) -> bool:
        with self.lock:
            self.starts[job.id] = time.monotonic()
        latency = self.latency if isinstance(self.latency, float) else self.latency[job.id]
        time.sleep(latency)
        with self.lock:
            self.ends[job.id] = time.monotonic()
        if job.id in self.explode:
            raise RuntimeError(f"boom in {job.id}")
        return job.id not in self.fail

    def order(self) -> list[str]:
        return sorted(self.starts, key=self.starts.__getitem__)


def slack(
    jobs: Iterable[Job], starts: Mapping[str, float], ends: Mapping[str, float], run_start: float
) -> dict[str, float]:
    """How long each job waited after its last dependency ended (or the run began, for roots)."""
    return {
        job.id: starts[job.id] - max((ends[dep] for dep in job.dependencies), default=run_start)
        for job in jobs
    }


def max_concurrency(starts: Mapping[str, float], ends: Mapping[str, float]) -> int:
    """Most intervals open at once; an end at the same instant as a start closes first."""
    points = sorted([(t, 1) for t in starts.values()] + [(t, -1) for t in ends.values()])
    running = peak = 0
    for _, step in points:
        running += step
        peak = max(peak, running)
    return peak


def timed_run(jobs: list[Job], execute: Recorder, **kwargs: object) -> tuple[ScheduleResult, float]:
    run_start = time.monotonic()
    return run_graph(jobs, execute, **kwargs), run_start  # type: ignore[arg-type]


DIAMOND = [Job("A"), Job("B", ("A",)), Job("C", ("A",)), Job("D", ("B", "C"))]


def test_diamond_runs_siblings_in_parallel_with_a_scripted_model() -> None:
    model = ScriptedModel(
        {
            "dev:A": [{"text": "a", "delay": 0.1}],
            "dev:B": [{"text": "b", "delay": 0.15}],
            "dev:C": [{"text": "c", "delay": 0.1}],
            "dev:D": [{"text": "d", "delay": 0.05}],
        }
    )

    def execute(job: Job) -> bool:
        reply = keyed(model, "dev", job.id).complete("system", [Message.user(job.id)])
        return reply.text == job.id.lower()

    run_start = time.monotonic()
    result = run_graph(DIAMOND, execute)

    assert result.outcomes == dict.fromkeys("ABCD", COMPLETED)
    model.assert_complete()
    calls = {call.task_id: call for call in model.calls}
    starts = {job_id: call.started for job_id, call in calls.items()}
    ends = {job_id: call.finished for job_id, call in calls.items()}
    assert starts["B"] >= ends["A"] and starts["C"] >= ends["A"]
    assert starts["B"] < ends["C"] and starts["C"] < ends["B"], "B and C must overlap"
    assert starts["D"] >= max(ends["B"], ends["C"])
    waits = slack(DIAMOND, starts, ends, run_start)
    assert max(waits.values()) < SLACK, waits
    length, path = result.critical_path()
    assert path == ["A", "B", "D"]
    assert result.makespan >= length


def random_dag(seed: int, size: int = 30) -> tuple[list[Job], dict[str, float]]:
    """A wide and deep graph: each job depends on up to three recent earlier jobs."""
    rng = random.Random(seed)
    jobs: list[Job] = []
    for i in range(size):
        earlier = [job.id for job in jobs[-8:]]
        deps = tuple(rng.sample(earlier, k=min(len(earlier), rng.randint(0, 3))))
        jobs.append(Job(f"J{i:02d}", deps))
    latency = {job.id: rng.uniform(0.01, 0.15) for job in jobs}
    return jobs, latency


def test_random_dag_no_job_waits_for_anything_but_its_dependencies() -> None:
    jobs, latency = random_dag(seed=7)
    depth, _ = critical_path_length(jobs, dict.fromkeys(latency, 1.0))
    assert depth >= 5, "the seeded graph should be deep, not just wide"
    recorder = Recorder(latency)

    result, run_start = timed_run(jobs, recorder)

    assert result.ids(COMPLETED) == [job.id for job in jobs]
    waits = slack(jobs, recorder.starts, recorder.ends, run_start)
    late = {job_id: round(wait, 3) for job_id, wait in waits.items() if wait >= SLACK}
    assert not late, f"jobs waited for non-dependencies: {late}"
    for job in jobs:
        assert all(recorder.starts[job.id] >= recorder.ends[dep] for dep in job.dependencies)
    length, _ = critical_path_length(jobs, result.durations)
    assert length <= result.makespan < length + SLACK * depth


TRAP = [
    Job("fast1"),
    Job("slow"),
    Job("fast2", ("fast1",)),
    Job("after-slow", ("slow",)),
    Job("fast3", ("fast2",)),
]
TRAP_LATENCY = {"fast1": 0.05, "slow": 0.4, "fast2": 0.05, "after-slow": 0.05, "fast3": 0.05}


def test_fast_chain_does_not_wait_for_slow_sibling_at_the_same_depth() -> None:
    recorder = Recorder(TRAP_LATENCY)

    result, run_start = timed_run(TRAP, recorder)

    assert result.succeeded
    assert recorder.starts["fast2"] - recorder.ends["fast1"] < SLACK
    assert recorder.ends["fast3"] < recorder.ends["slow"], "the fast chain finished first"
    assert max(slack(TRAP, recorder.starts, recorder.ends, run_start).values()) < SLACK


def level_by_level(jobs: list[Job], execute: Recorder) -> None:
    """The batching scheduler this module must not be: each depth waits for the whole previous."""
    depth: dict[str, int] = {}
    for job_id in topological_order(jobs):
        job = next(j for j in jobs if j.id == job_id)
        depth[job_id] = 1 + max((depth[dep] for dep in job.dependencies), default=-1)
    with ThreadPoolExecutor() as pool:
        for level in range(max(depth.values()) + 1):
            list(pool.map(execute, [job for job in jobs if depth[job.id] == level]))


def test_slack_check_catches_a_level_by_level_scheduler() -> None:
    recorder = Recorder(TRAP_LATENCY)
    run_start = time.monotonic()

    level_by_level(TRAP, recorder)

    waits = slack(TRAP, recorder.starts, recorder.ends, run_start)
    assert waits["fast2"] > SLACK, "the trap graph must expose batching"


def test_max_workers_bounds_concurrency() -> None:
    jobs = [Job(f"W{i}") for i in range(6)] + [Job("tail", ("W0", "W1"))]
    recorder = Recorder(0.05)

    result = run_graph(jobs, recorder, max_workers=2)

    assert result.succeeded
    assert max_concurrency(recorder.starts, recorder.ends) == 2


def test_higher_priority_starts_first_among_ready_jobs() -> None:
    jobs = [
        Job("root"),
        Job("low", ("root",), priority=0),
        Job("high", ("root",), priority=5),
        Job("mid", ("root",), priority=1),
        Job("high-later", ("root",), priority=5),
    ]
    recorder = Recorder(0.01)

    result = run_graph(jobs, recorder, max_workers=1)

    expected = ["root", "high", "high-later", "mid", "low"]
    assert recorder.order() == expected
    assert sorted(result.started_at, key=result.started_at.__getitem__) == expected
    assert topological_order(jobs) == expected


def test_among_equals_the_job_heading_the_longest_chain_starts_first() -> None:
    # "leaf" comes first in the plan but nothing waits for it; "head" starts a chain of three,
    # and with one worker starting it first is what lets the chain overlap nothing else.
    jobs = [Job("leaf"), Job("other"), Job("head"), Job("middle", ("head",)),
            Job("tail", ("middle",)), Job("after-other", ("other",))]
    recorder = Recorder(0.001)

    run_graph(jobs, recorder, max_workers=1)

    # heights: head 3, other 2, middle 2, then the ones nothing waits for, in plan order
    assert recorder.order() == ["head", "other", "middle", "leaf", "tail", "after-other"]
    assert topological_order(jobs)[0] == "leaf"  # the one-worker plan order is unchanged


def test_failure_blocks_exactly_its_transitive_dependents() -> None:
    jobs = [
        Job("A"),
        Job("B", ("A",)),
        Job("C", ("B",)),
        Job("D", ("C",)),
        Job("E", ("B",)),
        Job("F", ("A",)),
        Job("G", ("F",)),
        Job("H"),
        Job("I", ("H", "F")),
    ]
    recorder = Recorder(0.02, fail={"B"}, explode={"H"})
    events: list[tuple[str, str, str]] = []

    result = run_graph(jobs, recorder, on_event=lambda *event: events.append(event))

    assert result.outcomes == {
        "A": COMPLETED,
        "B": FAILED,
        "C": BLOCKED,
        "D": BLOCKED,
        "E": BLOCKED,
        "F": COMPLETED,
        "G": COMPLETED,
        "H": FAILED,
        "I": BLOCKED,
    }
    assert set(recorder.starts) == {"A", "B", "F", "G", "H"}
    assert result.reasons["C"] == "dependency B failed"
    assert result.reasons["E"] == "dependency B failed"
    assert result.reasons["D"] == "dependency B failed (blocked through C)"
    assert result.reasons["I"] == "dependency H failed"
    assert result.errors["H"] == "RuntimeError: boom in H"
    assert isinstance(result.exceptions["H"], RuntimeError)
    assert "B" in result.errors and "B" not in result.exceptions
    assert ("failed", "H", "RuntimeError: boom in H") in events
    assert ("blocked", "D", "dependency B failed (blocked through C)") in events
    assert not result.succeeded and not result.callback_errors


def test_any_exception_in_execute_fails_the_job_and_leaves_no_threads_behind() -> None:
    def execute(job: Job) -> bool:
        if job.id == "exit":
            raise SystemExit("worker quit")
        return True

    threads_before = threading.active_count()
    result = run_graph([Job("exit"), Job("after", ("exit",)), Job("other")], execute)

    assert result.outcomes == {"exit": FAILED, "after": BLOCKED, "other": COMPLETED}
    assert result.errors["exit"] == "SystemExit: worker quit"
    assert threading.active_count() == threads_before


def test_should_stop_lets_running_jobs_finish_and_skips_the_rest() -> None:
    stop = threading.Event()
    jobs = [Job(f"S{i}") for i in range(5)] + [Job("child", ("S0",))]
    recorder = Recorder(0.05)

    def execute(job: Job) -> bool:
        if job.id == "S1":
            stop.set()
        return recorder(job)

    events: list[tuple[str, str, str]] = []
    result = run_graph(
        jobs,
        execute,
        max_workers=2,
        should_stop=stop.is_set,
        on_event=lambda *event: events.append(event),
    )

    assert set(recorder.starts) == {"S0", "S1"}
    assert set(recorder.ends) == {"S0", "S1"}, "running jobs finish"
    assert result.ids(COMPLETED) == ["S0", "S1"]
    assert result.ids(SKIPPED) == ["S2", "S3", "S4", "child"]
    assert result.reasons["child"] == STOPPED_REASON
    assert result.stopped
    assert [e for e in events if e[0] == "skipped"] == [
        ("skipped", job_id, STOPPED_REASON) for job_id in ("S2", "S3", "S4", "child")
    ]


def test_a_failing_stop_check_stops_the_run_and_is_reported() -> None:
    def broken() -> bool:
        raise OSError("disk gone")

    result = run_graph([Job("A"), Job("B")], Recorder(0.01), should_stop=broken)

    assert result.ids(SKIPPED) == ["A", "B"]
    assert result.callback_errors and "OSError: disk gone" in result.callback_errors[0]


def test_completed_jobs_are_not_rerun_and_satisfy_dependents() -> None:
    jobs = [Job("A"), Job("B", ("A",)), Job("C", ("B",)), Job("X")]
    recorder = Recorder(0.01)

    result = run_graph(jobs, recorder, completed=("A", "X"))

    assert set(recorder.starts) == {"B", "C"}
    assert result.outcomes == dict.fromkeys("ABCX", COMPLETED)
    assert result.resumed == ("A", "X")
    assert "A" not in result.started_at
    with pytest.raises(ValueError, match="unknown job.*'Z'"):
        run_graph(jobs, recorder, completed=("Z",))


def test_a_raising_event_callback_is_captured_not_fatal() -> None:
    seen: list[tuple[str, str]] = []

    def on_event(event: str, job_id: str, detail: str) -> None:
        seen.append((event, job_id))
        if event == "started" and job_id == "A":
            raise KeyError("listener bug")

    result = run_graph([Job("A"), Job("B", ("A",))], Recorder(0.01), on_event=on_event)

    assert result.succeeded
    assert seen == [("started", "A"), ("completed", "A"), ("started", "B"), ("completed", "B")]
    assert len(result.callback_errors) == 1
    assert "on_event('started', 'A')" in result.callback_errors[0]
    assert "listener bug" in result.callback_errors[0]


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ([Job("A"), Job("A")], "duplicate job id 'A'"),
        ([Job("A", ("ghost",))], "'A' depends on unknown job 'ghost'"),
        ([Job("A", ("A",))], r"cycle: A -> A"),
        ([Job("A", ("C",)), Job("B", ("A",)), Job("C", ("B",))], r"cycle: A -> C -> B -> A"),
    ],
)
def test_invalid_graphs_are_refused_before_anything_runs(jobs: list[Job], message: str) -> None:
    recorder = Recorder(0.01)
    with pytest.raises(ValueError, match=message):
        run_graph(jobs, recorder)
    with pytest.raises(ValueError, match=message):
        topological_order(jobs)
    assert not recorder.starts


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        run_graph([Job("A")], Recorder(0.01), max_workers=0)
    with pytest.raises(TypeError, match="not the string"):
        Job("B", "A")  # type: ignore[arg-type]


def test_empty_graph_is_a_successful_no_op() -> None:
    result = run_graph([], Recorder(0.01))
    assert result.outcomes == {} and result.succeeded
    assert critical_path_length([], {}) == (0.0, [])


def test_critical_path_length_follows_the_longest_chain() -> None:
    durations = {"A": 1.0, "B": 3.0, "C": 2.0, "D": 1.0}
    assert critical_path_length(DIAMOND, durations) == (5.0, ["A", "B", "D"])
    assert critical_path_length(DIAMOND, {"C": 2.0}) == (2.0, ["A", "C"])
    with pytest.raises(ValueError, match="negative"):
        critical_path_length(DIAMOND, {"A": -1.0})


def test_topological_order_is_stable_and_priority_aware() -> None:
    jobs = [Job("c"), Job("a"), Job("b", ("c",)), Job("urgent", ("a",), priority=9)]
    assert topological_order(jobs) == ["c", "a", "urgent", "b"]
