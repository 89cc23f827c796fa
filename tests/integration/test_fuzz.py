"""Schema-driven fuzzing of the JSON API with schemathesis: every documented route, generated valid
and invalid bodies; the pass condition is no 5xx and no disagreement between the answers and
/openapi.json. Bounded here (GATEWAY_FUZZ_EXAMPLES per route, default 600); the long run is
`GATEWAY_FUZZ_EXAMPLES=5000 python -m pytest tests/integration/test_fuzz.py`."""

from __future__ import annotations

import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.core.gateway import Gateway
from service.http.app import build_app
from tests.helpers import ADMIN_TOKEN

EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "600"))


def test_every_route_answers_as_documented(gateway: Gateway) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(gateway))
    sent: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def fuzz(case: Any) -> None:
            # Whether a schema-valid row can be scored depends on the model (values far outside the
            # training data overflow inside float32 graphs and are refused with a documented 400).
            sent[case.operation.label] = sent.get(case.operation.label, 0) + 1
            case.call_and_validate(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, excluded_checks=[positive_data_acceptance])

        fuzz()
    print(f"fuzz: {sum(sent.values())} requests, 0 5xx, 0 schema violations: {sent}")
