"""The Python client of the service.

    from orchestrator.api.client import OrchestratorClient
    client = OrchestratorClient(api_url="http://localhost:8000", api_key="...")
    job = client.orchestrate("Build ...", max_workers=4, enable_recursion=True)
    result = client.wait(job["job_id"], timeout=600)
"""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = frozenset({"completed", "partial", "failed", "cancelled"})


class OrchestratorError(Exception):
    """The server refused a call or could not be reached; `message` is the server's own."""

    def __init__(self, message: str, *, status_code: int | None = None,
                 detail: Any = None) -> None:
        super().__init__(f"{message} (HTTP {status_code})" if status_code else message)
        self.message = message
        self.status_code = status_code
        self.detail = detail


class AuthenticationError(OrchestratorError):
    """401: the API key is missing or wrong."""


class NotFoundError(OrchestratorError):
    """404: no such job."""


class ValidationError(OrchestratorError):
    """422: the request was invalid; `detail` lists the fields."""


class JobTimeout(OrchestratorError):
    """wait() gave up before the job finished; the job goes on."""


class OrchestratorClient:
    def __init__(self, api_url: str = "http://localhost:8000", api_key: str = "", *,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=api_url.rstrip("/"), timeout=timeout,
                                  headers={"X-API-Key": api_key}, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OrchestratorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise OrchestratorError(f"Cannot reach the orchestrator at {self._http.base_url}: "
                                    f"{exc}") from exc
        if response.is_success:
            return response.json()
        try:
            body = response.json()
            message, detail = str(body.get("error") or body), body.get("detail")
        except ValueError:
            message, detail = response.text[:500] or response.reason_phrase, None
        kind = {401: AuthenticationError, 404: NotFoundError,
                422: ValidationError}.get(response.status_code, OrchestratorError)
        raise kind(message, status_code=response.status_code, detail=detail)

    def orchestrate(self, request: str, *, max_workers: int | None = None,
                    enable_recursion: bool | None = None,
                    max_recursion_depth: int | None = None, **config: Any) -> dict[str, Any]:
        """Start a job; returns {"job_id", "status"}. Other config keys pass through."""
        options = {"max_workers": max_workers, "enable_recursion": enable_recursion,
                   "max_recursion_depth": max_recursion_depth, **config}
        body = {"request": request,
                "config": {k: v for k, v in options.items() if v is not None}}
        return dict(self._call("POST", "/api/v1/orchestrate", json=body))

    def get_status(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v1/jobs/{job_id}/status"))

    def list_jobs(self, status: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status} if status else None
        return list(self._call("GET", "/api/v1/jobs", params=params)["jobs"])

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/api/v1/jobs/{job_id}/cancel"))

    def report(self, job_id: str) -> str:
        return str(self._call("GET", f"/api/v1/jobs/{job_id}/report")["markdown"])

    def health(self) -> dict[str, Any]:
        return dict(self._call("GET", "/api/v1/health"))

    def wait(self, job_id: str, timeout: float = 600.0, *,
             interval: float = 1.0) -> dict[str, Any]:
        """Poll until the job ends (completed, partial, failed, cancelled); its last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.get_status(job_id)
            if status["status"] in TERMINAL:
                return status
            if time.monotonic() >= deadline:
                raise JobTimeout(f"Job {job_id} is still {status['status']} after {timeout:g} s.")
            time.sleep(min(interval, max(deadline - time.monotonic(), 0.05)))
