"""The OpenAPI description shipped in the package (rest-api.yml) against a real server, with
schemathesis generating requests from it: every answer is documented, conforms to its schema,
and is never a 5xx other than the documented 502 (the clusters here cannot be reached, so no
request, however odd, can run anything)."""

from __future__ import annotations

import json
import pathlib

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jupyter_process import TOKEN, Server

SPEC = pathlib.Path(__file__).resolve().parent.parent / "jupyter_hpc_manager" / "rest-api.yml"
schema = schemathesis.openapi.from_path(str(SPEC))


@pytest.fixture(scope="module")
def unreachable_server(tmp_path_factory, sandbox_cluster):
    # Real SSH settings, but a port where nothing listens: every SSH attempt fails (502).
    offline = dict(sandbox_cluster, port=2299)
    server = Server(tmp_path_factory.mktemp("schema"), {
        "gemini": dict(offline, job_name="schema-gemini"),
        "apollo": dict(offline, job_name="schema-apollo"),
    }, extra="c.HPCManager.ssh_timeout = 2.0\n")
    server.start()
    yield server
    server.stop()


@schema.parametrize()
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_every_answer_is_documented_and_never_an_undocumented_5xx(case, unreachable_server):
    response = case.call(base_url=f"{unreachable_server.url}api/hpc",
                         headers={"Authorization": f"token {TOKEN}"})
    assert response.status_code < 500 or response.status_code == 502, (
        response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = json.loads(response.text)
        assert body["error"] and body["error"] == body["message"]
    case.validate_response(response, checks=[status_code_conformance, content_type_conformance,
                                              response_schema_conformance])


def test_the_spec_is_shipped_in_the_package():
    import importlib.resources

    text = importlib.resources.files("jupyter_hpc_manager").joinpath("rest-api.yml").read_text()
    assert "/cluster-status" in text and "/launch" in text
