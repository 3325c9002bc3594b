"""The FastAPI application: routes, errors as JSON, the dashboard, the audit log."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import models
from .auth import BodyLimit, require_api_key
from .config import ServiceConfig
from .records import ServiceJob
from .runner import JobRejected, JobRunner
from .timeline import bars, svg

VERSION = "1.0.0"
STATIC = Path(__file__).with_name("static")
JOB_ID = Annotated[str, PathParam(pattern=r"^[0-9a-f]{6,32}$", description="A job id.")]
audit = logging.getLogger("orchestrator.api.audit")


def _status(record: ServiceJob) -> models.JobStatus:
    return models.JobStatus(
        job_id=record.job_id, status=record.status,  # type: ignore[arg-type]
        request=record.request, depth=record.depth, parent_job_id=record.parent_job_id,
        parent_task_id=record.parent_task_id, created_at=record.created_at,
        started_at=record.started_at, finished_at=record.finished_at, error=record.error,
        notes=record.notes, usage=models.Usage(**record.usage),
        results=models.JobResults(
            tasks=[models.TaskResult(**t) for t in record.tasks], workspace=record.workspace,
            final_report=record.final_report, branch=record.branch,
            repository=record.repository,
        ),
    )


def _summary(record: ServiceJob) -> models.JobSummary:
    done = sum(1 for t in record.tasks if t["status"] in ("success", "recursive_success"))
    return models.JobSummary(
        job_id=record.job_id, status=record.status,  # type: ignore[arg-type]
        request=record.request[:300], depth=record.depth, parent_job_id=record.parent_job_id,
        created_at=record.created_at, finished_at=record.finished_at,
        tasks_total=len(record.tasks), tasks_done=done, cost_usd=record.usage.get("cost_usd"),
    )


def create_app(config: ServiceConfig, *, runner: JobRunner | None = None) -> FastAPI:
    """The service over `config`; pass a runner to inject a model factory in tests."""
    job_runner = runner or JobRunner(config)
    registry = job_runner.registry
    recovered = registry.recover()
    if recovered:
        logging.getLogger("orchestrator.api").warning(
            "%d job(s) of a previous server were still running; marked failed: %s",
            len(recovered), ", ".join(recovered))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        job_runner.shutdown()

    app = FastAPI(title="agent-team orchestration service", version=VERSION,
                  description="Hand a feature to a team of agents; follow and collect the "
                              "result. Every route but /api/v1/health needs X-API-Key.",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.api_key = config.api_key
    app.state.registry = registry
    app.state.runner = job_runner
    app.add_middleware(BodyLimit, limit=config.max_body_bytes)

    @app.middleware("http")
    async def audit_log(request: Request,
                        call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.monotonic()
        response = await call_next(request)
        audit.info("%s %s -> %d (%.0f ms) from %s", request.method, request.url.path,
                   response.status_code, (time.monotonic() - started) * 1000,
                   request.client.host if request.client else "?")
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"),
                     "message": e["msg"]} for e in exc.errors()]
        first = problems[0] if problems else {"field": "", "message": "invalid"}
        return JSONResponse({"error": f"Invalid {first['field'] or 'request'}: "
                                      f"{first['message']}", "detail": problems},
                            status_code=422)

    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": models.ErrorBody, "description": "Missing or wrong X-API-Key"},
        422: {"model": models.ErrorBody, "description": "Invalid request"},
    }
    with_job = {**errors, 404: {"model": models.ErrorBody, "description": "No such job"}}
    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_api_key)], responses=errors)

    def find(job_id: str) -> ServiceJob:
        record = registry.get(job_id)
        if record is None:
            raise HTTPException(404, f"No job {job_id}.")
        return record

    @api.post("/orchestrate", response_model=models.OrchestrateResponse, status_code=202,
              responses={400: {"model": models.ErrorBody, "description": "Body is not JSON"},
                         403: {"model": models.ErrorBody, "description": "Refused by policy"},
                         413: {"model": models.ErrorBody, "description": "Body too large"}})
    def orchestrate(body: models.OrchestrateRequest) -> models.OrchestrateResponse:
        """Start a job: the manager plans the request and the team builds it."""
        try:
            record = job_runner.submit(body.request, body.config.model_dump())
        except JobRejected as exc:
            return JSONResponse(  # type: ignore[return-value]
                {"error": str(exc), "detail": [{"field": exc.field, "message": str(exc)}]},
                status_code=exc.status_code)
        return models.OrchestrateResponse(job_id=record.job_id,
                                          status=record.status)  # type: ignore[arg-type]

    @api.get("/jobs", response_model=models.JobList)
    def list_jobs(status: Annotated[models.JobState | None, Query()] = None,
                  limit: Annotated[int, Query(ge=1, le=500)] = 100) -> models.JobList:
        """Jobs, newest first, children included."""
        chosen = [r for r in registry.all() if status is None or r.status == status]
        return models.JobList(jobs=[_summary(r) for r in chosen[:limit]])

    @api.get("/jobs/{job_id}/status", response_model=models.JobStatus, responses=with_job)
    def job_status(job_id: JOB_ID) -> models.JobStatus:
        """The job's status and results in the documented output format."""
        return _status(find(job_id))

    @api.post("/jobs/{job_id}/cancel", response_model=models.CancelResponse,
              responses=with_job)
    def cancel(job_id: JOB_ID) -> models.CancelResponse:
        """Cancel the job's whole tree; running agents stop at their next turn."""
        record = find(job_id)
        affected = job_runner.cancel(job_id)
        return models.CancelResponse(job_id=job_id, status=record.status,  # type: ignore
                                     cancelled_jobs=affected)

    @api.get("/jobs/{job_id}/report", response_model=models.ReportResponse, responses={
        **with_job, 409: {"model": models.ErrorBody, "description": "Not finished yet"}})
    def report(job_id: JOB_ID) -> models.ReportResponse:
        """FINAL_RESULT.md of a root job, the job's own report for a child job."""
        record = find(job_id)
        path = record.final_report or record.report
        if not path or not Path(path).is_file():
            raise HTTPException(409, f"Job {job_id} has no report yet ({record.status}).")
        return models.ReportResponse(job_id=job_id, path=path,
                                     markdown=Path(path).read_text(encoding="utf-8"))

    @api.get("/jobs/{job_id}/timeline", response_model=models.Timeline, responses=with_job)
    def timeline(job_id: JOB_ID) -> models.Timeline:
        """Tasks per worker lane over time, as bars and as an SVG chart."""
        record = find(job_id)
        chart = bars(record.job_id, record.tasks, now=time.time())
        return models.Timeline(job_id=job_id, bars=[models.TimelineBar(**vars(b))
                                                    for b in chart],
                               svg=svg(chart, title=f"Job {job_id}"))

    @api.get("/jobs/{job_id}/events", responses={
        **with_job, 200: {"content": {"text/event-stream": {}},
                          "description": "Server-sent events until the job tree ends"}})
    async def events(job_id: JOB_ID,
                     after: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> StreamingResponse:
        """Live events of the job and its children (server-sent events)."""
        find(job_id)

        async def stream() -> AsyncIterator[str]:
            seq, idle = after, 0.0
            while True:
                chosen, done = registry.events_after(job_id, seq)
                for event in chosen:
                    seq = max(seq, int(event["seq"]))
                    yield (f"id: {event['seq']}\nevent: {event['kind']}\n"
                           f"data: {json.dumps(event, default=str)}\n\n")
                if done and not chosen:
                    yield "event: end\ndata: {}\n\n"
                    return
                idle = 0.0 if chosen else idle + 0.25
                if idle >= 15:
                    idle = 0.0
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="API docs")

    app.include_router(api)

    @app.get("/api/v1/health", response_model=models.Health, tags=["health"])
    def health() -> models.Health:
        """Liveness; the only route without a key."""
        return models.Health(status="ok", version=VERSION, jobs_running=registry.running_count())

    @app.get("/", include_in_schema=False)
    def dashboard() -> HTMLResponse:
        """The dashboard page holds no data; its calls carry the key the user types."""
        return HTMLResponse((STATIC / "dashboard.html").read_text(encoding="utf-8"),
                            headers={"Content-Security-Policy": "default-src 'self'; "
                                     "script-src 'self' 'unsafe-inline'; style-src 'self' "
                                     "'unsafe-inline'; img-src 'self' data:"})

    return app
