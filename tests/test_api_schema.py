"""Property-based tests of the whole API from its own OpenAPI schema (schemathesis): whatever a client
sends, the API answers as its schema says, with no server error, on the real service and database."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jobs_fixtures import embedded_variables
from schemathesis.specs.openapi.checks import allow_header_conformance, positive_data_acceptance

from api.app import create_app
from api.deps import ApiSettings
from jobs.broker import localbroker
from jobs.core.database import dispose_engines
from jobs.core.settings import get_settings, reset_settings

TOKEN = "schema-token"


# The app is built at import (schemathesis reads its schema at collection); the service behind it reads
# its database and broker from the environment, which the fixture below points into ROOT for this module.
ROOT = Path(tempfile.mkdtemp(prefix="api-schema-"))
APP = create_app(ApiSettings(TOKEN, False))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@schema.auth()
class BearerToken:
    """Every generated request carries the token, except those that check what happens without it."""

    def get(self, case: schemathesis.Case, context: object) -> str:
        return TOKEN

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(autouse=True, scope="module")
def service_in_root() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDVL_VAR_DIR", str(ROOT / "var"))
        for name, value in embedded_variables(ROOT).items():
            patch.setenv(name, value)
        for name in ("JOBS_ARTIFACTS_DIR", "JOBS_LOG_DIR"):
            patch.delenv(name, raising=False)
        reset_settings()
        yield
        dispose_engines()
        if (local := localbroker.configured()) is not None:  # daemonized: it would outlive the tests
            localbroker.stop(local)
    reset_settings()
    shutil.rmtree(ROOT, ignore_errors=True)


@schema.parametrize()
# Few examples per route: enough to find a 500 or a response that breaks the schema, cheap on two cores.
@settings(max_examples=15, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_the_api_keeps_to_its_schema(case: schemathesis.Case) -> None:
    assert get_settings().resolved_var_dir() == ROOT / "var"  # generated jobs never land in the repository's var/
    # A schema-valid submission may still be refused (422) for what a schema cannot say: a config file that
    # does not exist, a path outside the data roots, a stage that needs --checkpoint.
    # Starlette answers OPTIONS with the Allow header of one route on the path (GET /jobs, not POST).
    case.call_and_validate(excluded_checks=[positive_data_acceptance, allow_header_conformance])


def test_the_schema_documents_every_route() -> None:
    paths = set(schema.raw_schema["paths"])

    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/logs", "/jobs/{job_id}/cancel", "/experiments"} <= paths
    assert {"/experiments/{experiment_id}/metrics", "/reports/latest", "/reports/{report_id}", "/healthz"} <= paths
