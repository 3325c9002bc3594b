"""Dependency-ordered parallel execution: the plan's `dependencies` are the schedule.

A job starts the moment all of its dependencies have completed and a worker is free; nothing else
holds it back. There are no level-by-level batches, so a fast chain never waits for a slow sibling
at the same depth. A failed job blocks only its transitive dependents, a stop request lets running
jobs finish and skips the rest, and a resumed run counts earlier completions as satisfied. The
module knows nothing about git or models: `execute(job)` does the work and says whether it worked.
"""

from __future__ import annotations

import _thread
import heapq
import logging
import queue
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

log = logging.getLogger(__name__)

Outcome = Literal["completed", "failed", "blocked", "skipped"]
COMPLETED: Outcome = "completed"
FAILED: Outcome = "failed"
BLOCKED: Outcome = "blocked"
SKIPPED: Outcome = "skipped"
OUTCOMES: tuple[Outcome, ...] = (COMPLETED, FAILED, BLOCKED, SKIPPED)

STARTED = "started"
EVENTS: tuple[str, ...] = (STARTED, COMPLETED, FAILED, BLOCKED, SKIPPED)
STOPPED_REASON = "the run was stopped before this job started"

EventCallback = Callable[[str, str, str], None]


@dataclass(frozen=True)
class Job:
    """One unit of work; `priority` orders jobs that are ready at the same time (higher first)."""

    id: str
    dependencies: tuple[str, ...] = ()
    priority: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.dependencies, str):
            raise TypeError(
                f"Job {self.id!r}: dependencies must be a sequence of ids, not the string "
                f"{self.dependencies!r}"
            )
        object.__setattr__(self, "dependencies", tuple(dict.fromkeys(self.dependencies)))


@dataclass
class ScheduleResult:
    """What happened to every job, with real timings (`time.monotonic`) for reports and checks.

    Attributes:
        outcomes: id -> "completed", "failed", "blocked" or "skipped", for every job.
        errors: id -> why a failed job failed ("RuntimeError: message" or a falsy return).
        exceptions: id -> the exception a failed job raised, for callers that re-raise.
        reasons: id -> why a blocked or skipped job never ran ("dependency X failed").
        started_at, finished_at: id -> monotonic times, measured in the worker thread.
        resumed: ids passed as `completed`, counted as completed but not executed.
        callback_errors: what `on_event` or `should_stop` raised; the run went on regardless.
        stopped: True when `should_stop` kept a ready job from starting.
    """

    jobs: tuple[Job, ...] = ()
    outcomes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    exceptions: dict[str, BaseException] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    started_at: dict[str, float] = field(default_factory=dict)
    finished_at: dict[str, float] = field(default_factory=dict)
    resumed: tuple[str, ...] = ()
    callback_errors: list[str] = field(default_factory=list)
    stopped: bool = False
    run_started: float = 0.0
    run_finished: float = 0.0

    @property
    def makespan(self) -> float:
        """Wall time of the whole run, from the first scheduling decision to the last outcome."""
        return max(0.0, self.run_finished - self.run_started)

    @property
    def durations(self) -> dict[str, float]:
        """Measured run time of every job that was executed."""
        return {
            job_id: self.finished_at[job_id] - started
            for job_id, started in self.started_at.items()
            if job_id in self.finished_at
        }

    @property
    def succeeded(self) -> bool:
        """True when every job is completed, now or in the run being resumed."""
        return all(outcome == COMPLETED for outcome in self.outcomes.values())

    def ids(self, outcome: str) -> list[str]:
        """Ids with the given outcome, in the jobs' original order."""
        return [job.id for job in self.jobs if self.outcomes.get(job.id) == outcome]

    def critical_path(
        self, durations: Mapping[str, float] | None = None
    ) -> tuple[float, list[str]]:
        """Longest dependency chain, by the given durations or else by the measured ones."""
        return critical_path_length(self.jobs, self.durations if durations is None else durations)


def topological_order(jobs: Iterable[Job]) -> list[str]:
    """Ids in the order a single worker would run them: dependencies first, then priority."""
    return _order(_validate(jobs))


def _order(index: Mapping[str, Job]) -> list[str]:
    position = _positions(index)
    dependents = _dependents(index)
    waiting = {job_id: len(job.dependencies) for job_id, job in index.items()}
    ready = [_ready_key(index[job_id], position) for job_id, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        job_id = heapq.heappop(ready)[2]
        order.append(job_id)
        for child in dependents[job_id]:
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, _ready_key(index[child], position))
    return order


def critical_path_length(
    jobs: Iterable[Job], durations: Mapping[str, float]
) -> tuple[float, list[str]]:
    """The longest path by duration, a lower bound on any schedule's makespan.

    Jobs missing from `durations` count as zero (blocked or skipped jobs never ran).
    """
    index = _validate(jobs)
    finish: dict[str, float] = {}
    previous: dict[str, str | None] = {}
    for job_id in _order(index):
        duration = float(durations.get(job_id, 0.0))
        if duration < 0:
            raise ValueError(f"job {job_id!r} has a negative duration {duration}")
        before = max(index[job_id].dependencies, key=lambda dep: finish[dep], default=None)
        previous[job_id] = before
        finish[job_id] = duration + (finish[before] if before is not None else 0.0)
    if not finish:
        return 0.0, []
    longest = max(finish, key=lambda job_id: finish[job_id])
    length = finish[longest]
    last: str | None = longest
    path: list[str] = []
    while last is not None:
        path.append(last)
        last = previous[last]
    return length, path[::-1]


def run_graph(
    jobs: Iterable[Job],
    execute: Callable[[Job], bool],
    *,
    max_workers: int | None = None,
    on_event: EventCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    completed: Iterable[str] = (),
) -> ScheduleResult:
    """Run every job in a worker thread as soon as its dependencies completed and a worker is free.

    Args:
        jobs: the graph; ids unique, dependencies known, no cycles (else ValueError).
        execute: does one job; truthy means completed, falsy or an exception means failed.
        max_workers: jobs running at once; None means no limit (one thread per job to run).
            Among ready jobs: higher priority first, then the one heading the longest chain of
            dependents, then the order given.
            The threads start up front, so a ready job never waits for one to be created.
        on_event: called from the scheduling thread as (event, job_id, detail) for started,
            completed, failed, blocked and skipped; what it raises lands in `callback_errors`.
        should_stop: asked before each start; once True nothing new starts and the rest is skipped.
        completed: ids finished by an earlier run; not executed, they satisfy their dependents.
    """
    index = _validate(jobs)
    done = tuple(dict.fromkeys(completed))
    unknown = [job_id for job_id in done if job_id not in index]
    if unknown:
        raise ValueError(f"completed names unknown job(s): {', '.join(map(repr, unknown))}")
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be at least 1 or None, got {max_workers}")
    workers = max_workers or max(1, len(index))
    return _Run(index, execute, on_event, should_stop, done).run(workers)


@dataclass(frozen=True)
class _Attempt:
    job_id: str
    ok: bool
    started: float
    finished: float
    error: str = ""
    exception: BaseException | None = None


class _Workers:
    """Threads started ahead of need, so starting a job never waits for a new thread.

    Creating a thread on demand (as ThreadPoolExecutor does) costs milliseconds on a loaded
    machine, and that cost would land between a dependency finishing and its dependent
    starting. `threading.Thread.start` also waits for each new thread to report that it runs:
    with 200 jobs and no limit that handshake alone cost 10-40 ms of a 112 ms critical path.
    The workers are started with `_thread.start_new_thread`, which does not wait (about 20 us
    each), all before the first job.
    """

    def __init__(self, count: int, attempt: Callable[[Job], _Attempt]) -> None:
        self.inbox: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self.outbox: queue.SimpleQueue[_Attempt] = queue.SimpleQueue()
        self._attempt = attempt
        self._count = count
        self._started = 0

    def start(self, now: int) -> None:
        """Start `now` worker threads here, the others from a helper thread.

        Each start is followed by `time.sleep(0)`, which lets the new thread take the GIL and
        its job at once: without it the starting thread kept the GIL for the whole loop and
        the fourth ready job of 67 began 7-11 ms late.
        """
        now = min(now, self._count)
        self._spawn(now)
        if self._count > now:
            self._started += self._count - now
            _thread.start_new_thread(self._spawn, (self._count - now, False))

    def _spawn(self, count: int, counted: bool = True) -> None:
        for _ in range(count):
            _thread.start_new_thread(self._serve, ())
            if counted:
                self._started += 1
            time.sleep(0)

    def finished(self) -> list[_Attempt]:
        """Block until one job finished, then take every other result already waiting."""
        results = [self.outbox.get()]
        while not self.outbox.empty():
            results.append(self.outbox.get_nowait())
        return results

    def close(self, running: int) -> None:
        """Wait for the `running` jobs' results (none after a normal run), then end every thread.

        Idle threads are told to end, not waited for: joining 200 of them took 10-25 ms
        after the last job had finished, all of it added to the makespan.
        """
        if running and not self._started:  # queued before a failure stopped the start
            self._spawn(running)
        for _ in range(running):
            self.outbox.get()
        for _ in range(self._started):
            self.inbox.put(None)

    def _serve(self) -> None:
        while (job := self.inbox.get()) is not None:
            self.outbox.put(self._attempt(job))


class _Run:
    """The state of one run_graph call; only the calling thread touches it."""

    def __init__(
        self,
        index: dict[str, Job],
        execute: Callable[[Job], bool],
        on_event: EventCallback | None,
        should_stop: Callable[[], bool] | None,
        done: tuple[str, ...],
    ) -> None:
        self.index = index
        self.execute = execute
        self.on_event = on_event
        self.should_stop = should_stop
        self.position = _positions(index)
        self.dependents = _dependents(index)
        self.height = _heights(index, self.dependents)
        self.waiting = {
            job_id: {dep for dep in job.dependencies if dep not in done}
            for job_id, job in index.items()
            if job_id not in done
        }
        self.ready: list[tuple[int, int, int, str]] = []
        self.running: set[str] = set()
        self.result = ScheduleResult(jobs=tuple(index.values()), resumed=done)
        self.result.outcomes.update((job_id, COMPLETED) for job_id in done)

    def run(self, limit: int) -> ScheduleResult:
        self.result.run_started = time.monotonic()
        for job_id, deps in self.waiting.items():
            if not deps:
                heapq.heappush(self.ready, self._key(job_id))
        workers = _Workers(min(limit, len(self.waiting)), self._attempt)
        try:
            self._start_ready(workers, limit)  # queued first: the first threads take them
            workers.start(max(1, len(self.running)))
            while self.running:
                finished = workers.finished()
                for attempt in sorted(finished, key=lambda a: self.position[a.job_id]):
                    self._finish(attempt)
                self._start_ready(workers, limit)
        finally:
            workers.close(len(self.running))
        for job in self.index.values():
            if job.id not in self.result.outcomes:
                self._decide(job.id, SKIPPED, STOPPED_REASON)
        self.result.run_finished = time.monotonic()
        return self.result

    def _key(self, job_id: str) -> tuple[int, int, int, str]:
        """Higher priority first; then the job that heads the longest chain of dependents
        (it bounds when the run can end), then the plan's order."""
        return (-self.index[job_id].priority, -self.height[job_id], self.position[job_id],
                job_id)

    def _start_ready(self, workers: _Workers, limit: int) -> None:
        while self.ready and len(self.running) < limit and not self.result.stopped:
            if self._stop_requested():
                self.result.stopped = True
                return
            job_id = heapq.heappop(self.ready)[3]
            self._emit(STARTED, job_id, "")
            self.running.add(job_id)
            workers.inbox.put(self.index[job_id])

    def _attempt(self, job: Job) -> _Attempt:
        """Runs in a worker thread and always returns: a lost result would hang the scheduler."""
        started = time.monotonic()
        try:
            ok = self.execute(job)
        except BaseException as exc:
            return _Attempt(job.id, False, started, time.monotonic(), _describe(exc), exc)
        if ok:
            return _Attempt(job.id, True, started, time.monotonic())
        error = f"execute reported failure ({ok!r})"
        return _Attempt(job.id, False, started, time.monotonic(), error)

    def _finish(self, attempt: _Attempt) -> None:
        job_id = attempt.job_id
        self.running.discard(job_id)
        self.result.started_at[job_id] = attempt.started
        self.result.finished_at[job_id] = attempt.finished
        if attempt.ok:
            self._decide(job_id, COMPLETED, "")
            for child in self.dependents[job_id]:
                deps = self.waiting.get(child)
                if deps is not None and job_id in deps:
                    deps.discard(job_id)
                    if not deps and child not in self.result.outcomes:
                        heapq.heappush(self.ready, self._key(child))
            return
        self.result.errors[job_id] = attempt.error
        if attempt.exception is not None:
            self.result.exceptions[job_id] = attempt.exception
        self._decide(job_id, FAILED, attempt.error)
        self._block_dependents(job_id)

    def _block_dependents(self, failed: str) -> None:
        frontier = [(child, failed) for child in self.dependents[failed]]
        while frontier:
            job_id, via = frontier.pop(0)
            if job_id in self.result.outcomes:
                continue
            reason = f"dependency {failed} failed"
            if via != failed:
                reason += f" (blocked through {via})"
            self._decide(job_id, BLOCKED, reason)
            frontier.extend((child, job_id) for child in self.dependents[job_id])

    def _decide(self, job_id: str, outcome: Outcome, detail: str) -> None:
        self.result.outcomes[job_id] = outcome
        if outcome in (BLOCKED, SKIPPED):
            self.result.reasons[job_id] = detail
        self._emit(outcome, job_id, detail)

    def _stop_requested(self) -> bool:
        if self.should_stop is None:
            return False
        try:
            return bool(self.should_stop())
        except Exception as exc:
            self._callback_failed(f"should_stop() raised {_describe(exc)}; stopping the run")
            return True

    def _emit(self, event: str, job_id: str, detail: str) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event, job_id, detail)
        except Exception as exc:
            self._callback_failed(f"on_event({event!r}, {job_id!r}) raised {_describe(exc)}")

    def _callback_failed(self, message: str) -> None:
        log.warning("scheduler callback failed: %s", message)
        self.result.callback_errors.append(message)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _ready_key(job: Job, position: Mapping[str, int]) -> tuple[int, int, str]:
    """Heap key: higher priority first, then the jobs' original order."""
    return -job.priority, position[job.id], job.id


def _positions(index: Mapping[str, Job]) -> dict[str, int]:
    return {job_id: i for i, job_id in enumerate(index)}


def _validate(jobs: Iterable[Job]) -> dict[str, Job]:
    """Guard against graphs the plan module should already have refused."""
    index: dict[str, Job] = {}
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"expected Job, got {type(job).__name__}: {job!r}")
        if job.id in index:
            raise ValueError(f"duplicate job id {job.id!r}")
        index[job.id] = job
    for job in index.values():
        for dep in job.dependencies:
            if dep not in index:
                raise ValueError(f"job {job.id!r} depends on unknown job {dep!r}")
    cycle = find_cycle({job_id: job.dependencies for job_id, job in index.items()})
    if cycle:
        raise ValueError(
            f"dependency cycle: {' -> '.join(cycle)} (each job depends on the next one)"
        )
    return index


def _dependents(index: Mapping[str, Job]) -> dict[str, list[str]]:
    dependents: dict[str, list[str]] = {job_id: [] for job_id in index}
    for job in index.values():
        for dep in job.dependencies:
            dependents[dep].append(job.id)
    return dependents


def _heights(index: Mapping[str, Job], dependents: Mapping[str, list[str]]) -> dict[str, int]:
    """Jobs in the longest chain that starts at each job (1 for a job nothing depends on)."""
    height: dict[str, int] = {}
    for job_id in reversed(_order(index)):  # dependents before the jobs they depend on
        height[job_id] = 1 + max((height[child] for child in dependents[job_id]), default=0)
    return height


def find_cycle(dependencies: Mapping[str, Iterable[str]]) -> list[str] | None:
    """One dependency cycle as a closed path (a -> b -> a), or None.

    Iterative depth-first search, so a long chain cannot exhaust the call stack. Dependencies
    on ids that are not keys of the mapping are ignored.
    """
    finished: set[str] = set()
    for root in dependencies:
        if root in finished:
            continue
        path = [root]
        on_path = {root}
        stack = [iter(dependencies[root])]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                finished.add(path[-1])
                on_path.discard(path.pop())
                stack.pop()
            elif dep not in dependencies or dep in finished:
                continue
            elif dep in on_path:
                return path[path.index(dep) :] + [dep]
            else:
                path.append(dep)
                on_path.add(dep)
                stack.append(iter(dependencies[dep]))
    return None
