"""Property tests of the REST API with schemathesis, against the schema the server serves.

Jobs submitted here replay an empty session, so each fails at planning at once: the tests
exercise the HTTP surface (validation, auth, responses matching the schema), not the team.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from agent_team.scripted import ScriptedModel
from hypothesis import HealthCheck, settings

from .service_helpers import KEY, Service, serve, service_config

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp = Path(tmp_path_factory.mktemp("schema"))
    with serve(service_config(tmp, max_concurrent_jobs=1),
               model_factory=lambda: ScriptedModel({})) as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(service: Service) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{service.url}/api/v1/openapi.json",
                                         headers={"X-API-Key": KEY})


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.exclude(path_regex=".*/events$").parametrize()
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case: schemathesis.Case, service: Service) -> None:
    case.call_and_validate(base_url=service.url, headers={"X-API-Key": KEY})


def test_events_route_is_in_the_schema(service: Service) -> None:
    with service.client() as http:
        document = http.get("/api/v1/openapi.json").json()
    paths = document["paths"]
    assert "/api/v1/jobs/{job_id}/events" in paths
    scheme = document["components"]["securitySchemes"]["APIKeyHeader"]
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-API-Key",
                      "description": scheme["description"]}
    secured = {path for path, ops in paths.items() for op in ops.values() if op.get("security")}
    assert secured == set(paths) - {"/api/v1/health"}
