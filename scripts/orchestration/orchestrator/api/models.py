"""Request and response bodies of the REST API (pydantic): validation at the edge, and the
OpenAPI schema that clients and the property tests read."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_REQUEST_CHARS = 20_000
MAX_PATH_CHARS = 4_096

JobState = Literal["pending", "running", "completed", "partial", "failed", "cancelled"]
TaskState = Literal["pending", "running", "success", "recursive_success", "failed", "cancelled"]


class JobConfig(BaseModel):
    """Per-job settings; each is capped by the server's config.yaml."""

    model_config = ConfigDict(extra="forbid")

    max_workers: int | None = Field(None, ge=1, le=64, description="Agents at once.")
    default_timeout: float | None = Field(
        None, gt=0, le=86_400, description="Seconds one worker may spend on its task."
    )
    max_retries: int | None = Field(None, ge=0, le=10, description="Retries of a failed task.")
    execution_mode: Literal["native", "wsl", "windows"] | None = Field(
        None, description="Accepted for compatibility; reported as not applicable."
    )
    enable_recursion: bool | None = None
    max_recursion_depth: int | None = Field(None, ge=0, le=10)
    current_depth: int = Field(0, ge=0, le=10)
    project_dir: str | None = Field(
        None, min_length=1, max_length=MAX_PATH_CHARS, pattern=r"^/",
        description="A git repository under one of the server's orchestrator.project_roots; "
                    "without it the job gets a fresh repository in its workspace.",
    )
    max_api_calls: int | None = Field(None, ge=1, le=1_000_000)
    token_budget: int | None = Field(None, ge=1, le=10_000_000_000)
    cost_limit_usd: float | None = Field(None, gt=0, le=100_000)


class OrchestrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request: str = Field(..., min_length=1, max_length=MAX_REQUEST_CHARS,
                         description="The feature to build, in plain words.")
    config: JobConfig = Field(default_factory=lambda: JobConfig.model_validate({}))


class OrchestrateResponse(BaseModel):
    job_id: str
    status: JobState


class TaskResult(BaseModel):
    worker_id: str
    task_id: str
    description: str = ""
    role: str = ""
    status: TaskState
    output: str = ""
    files_created: list[str] = Field(default_factory=list)
    files_modified: list[str] = Field(default_factory=list)
    error: str | None = None
    child_job_id: str | None = None
    child_results: list[TaskResult] | None = None
    started_at: str | None = None
    finished_at: str | None = None
    duration_s: float | None = None
    tokens: int = 0
    cost_usd: float | None = 0.0
    branch: str | None = None
    commit: str | None = None


class JobResults(BaseModel):
    tasks: list[TaskResult] = Field(default_factory=list)
    workspace: str
    final_report: str | None = None
    branch: str | None = None
    repository: str | None = None


class Usage(BaseModel):
    api_calls: int = 0
    tokens: int = 0
    cost_usd: float | None = 0.0


class JobStatus(BaseModel):
    job_id: str
    status: JobState
    request: str
    depth: int
    parent_job_id: str | None = None
    parent_task_id: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    results: JobResults


class JobSummary(BaseModel):
    job_id: str
    status: JobState
    request: str
    depth: int
    parent_job_id: str | None = None
    created_at: str
    finished_at: str | None = None
    tasks_total: int = 0
    tasks_done: int = 0
    cost_usd: float | None = 0.0


class JobList(BaseModel):
    jobs: list[JobSummary]


class CancelResponse(BaseModel):
    job_id: str
    status: JobState
    cancelled_jobs: list[str]


class ReportResponse(BaseModel):
    job_id: str
    path: str
    markdown: str


class TimelineBar(BaseModel):
    job_id: str
    task_id: str
    worker_id: str
    lane: str
    start_s: float
    end_s: float | None = None
    status: str


class Timeline(BaseModel):
    job_id: str
    bars: list[TimelineBar]
    svg: str


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    jobs_running: int


class ErrorBody(BaseModel):
    error: str
    detail: object = None
