"""Fuzz the real server with schemathesis from its own OpenAPI schema: no input gives a 5xx.

Every operation of ``/docs.json`` (BentoML's generated schema, built from serving.schemas) gets
``MAX_EXAMPLES`` schema-valid and ``MAX_EXAMPLES`` schema-violating requests, with the API key.
The check is schemathesis' ``not_a_server_error``: 4xx answers are fine, a 5xx fails the test
with the request that caused it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.serving.conftest import (
    API_KEY,
    Server,
    Setup,
    clone_artifacts,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 25
OPERATIONS = {"/score", "/score_batch", "/at_risk", "/events"}


@pytest.fixture(scope="module")
def fuzz_server(serving_setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own (private artifacts copy): fuzzed events must not reach other tests."""
    root = tmp_path_factory.mktemp("fuzz")
    config = clone_artifacts(serving_setup.config, root)
    srv = start_server(config, api_key=API_KEY, log=root / "server.log")
    try:
        yield srv
    finally:
        stop_server(srv.process)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_input_causes_a_server_error(fuzz_server: Server, mode: GenerationMode) -> None:
    server = fuzz_server
    schema = schemathesis.openapi.from_url(
        f"{server.url}/docs.json", headers=server.headers, timeout=30
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= OPERATIONS
    n_calls = {"n": 0}
    for operation in operations:
        if operation.path not in OPERATIONS:
            continue

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @seed(20251122)
        @given(case=operation.as_strategy(generation_mode=mode))
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=server.url,
                headers=server.headers,
                checks=[not_a_server_error],
                timeout=30,
            )
            n_calls["n"] += 1

        fuzz()
    assert n_calls["n"] >= len(OPERATIONS)  # every operation was really called
