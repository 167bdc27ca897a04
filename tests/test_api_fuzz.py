"""schemathesis against the whole API, in process, on each backend: SQLite (with the embedded broker) and
PostgreSQL (with Redis). Valid and invalid requests for every operation, NUL bytes and the whole of Unicode
allowed in generated strings; not one may get a server error or a body that is not JSON.

Jobs are recorded and enqueued for real but no worker runs, so nothing trains. The cases run without
shrinking: a failure is reported with its request, and the run goes on to count every case.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from jobs_fixtures import BACKENDS, JobEnv, both_backends
from schemathesis import Case
from schemathesis.generation import GenerationMode

from api.app import create_app
from api.deps import ApiSettings

pytestmark = pytest.mark.slow

TOKEN = "fuzz-token"
# Per operation and mode; 10 operations x 2 modes x this is the run's size (at least 2,000 cases).
EXAMPLES = 125
MIN_CASES = 2000

APP = create_app(ApiSettings(TOKEN, False))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Every request carries the token (test_api_bad_input.py covers requests without it), so cases reach the routes.
schema.config.generation.update(allow_x00=True, codec="utf-8", with_security_parameters=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[JobEnv]:
    monkeypatch.setenv("MEDVL_VAR_DIR", str(tmp_path / "var"))
    yield from both_backends(request.param, tmp_path, monkeypatch)


def _problem(response) -> str | None:  # type: ignore[no-untyped-def]
    """What is wrong with a response: a server error, or a JSON body that strict JSON cannot read."""
    if response.status_code >= 500:
        return f"server error {response.status_code}: {response.text[:300]}"
    if "json" in response.headers.get("content-type", ""):

        def refuse(constant: str) -> None:
            raise ValueError(f"non-standard JSON constant {constant}")

        try:
            json.loads(response.content, parse_constant=refuse)
        except ValueError as exc:
            return f"body is not JSON ({exc}): {response.text[:300]}"
    return None


def _run_cases(operation: schemathesis.APIOperation, mode: GenerationMode, check: Callable[[Case], None]) -> None:
    """`check` on up to EXAMPLES generated cases of one operation, without shrinking."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        phases=[Phase.generate],
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        check(case)

    # No invalid request exists for an operation without parameters (GET /healthz).
    with contextlib.suppress(Unsatisfiable):
        run()


def test_no_generated_request_gets_a_server_error(backend: JobEnv, request: pytest.FixtureRequest) -> None:
    counts: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    alphabet: Counter[str] = Counter()
    failures: list[str] = []

    def check(case: Case) -> None:
        counts[case.operation.label] += 1
        sent = json.dumps([case.path_parameters, case.query, case.headers, case.body], default=str, ensure_ascii=False)
        alphabet["NUL"] += "\\u0000" in sent
        alphabet["non-ASCII"] += any(ord(character) > 127 for character in sent)
        response = case.call(headers={"Authorization": f"Bearer {TOKEN}"})
        statuses[response.status_code] += 1
        if problem := _problem(response):
            failures.append(f"{case.method} {case.formatted_path}: {problem}\n    {case.as_curl_command()}")

    begun = time.perf_counter()
    for result in schema.get_all_operations():
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run_cases(result.ok(), mode, check)
    elapsed = time.perf_counter() - begun
    total = sum(counts.values())
    per_status = ", ".join(f"{code}: {count}" for code, count in sorted(statuses.items()))
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(
            f"\nschemathesis [{request.node.callspec.id}]: {total} generated cases over {len(counts)} operations "
            f"in {elapsed:.0f} s, {len(failures)} failing; responses {per_status}; "
            f"cases with a NUL byte {alphabet['NUL']}, with non-ASCII text {alphabet['non-ASCII']}"
        )

    assert not failures, "\n".join(failures[:20])
    assert total >= MIN_CASES
