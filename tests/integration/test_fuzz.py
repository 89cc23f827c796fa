"""Schema-driven fuzzing of the JSON API with schemathesis: every documented route, generated valid
and invalid bodies; the pass condition is no 5xx and no disagreement between the answers and
/openapi.json. Bounded here (GATEWAY_FUZZ_EXAMPLES per route and mode, default 250); the long run is
`GATEWAY_FUZZ_EXAMPLES=5000 python -m pytest tests/integration/test_fuzz.py`."""

from __future__ import annotations

import itertools
import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import positive_data_acceptance

from service.core.gateway import Gateway
from service.http.app import build_app
from tests.helpers import ADMIN_TOKEN

REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "250"))


def test_every_route_answers_as_documented(gateway: Gateway) -> None:
    # 413 is how the gateway refuses what is too large (records over maxItems, bodies over the limit)
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(gateway), config=config)
    sent: dict[str, dict[int, int]] = {}
    for result, mode in itertools.product(schema.get_all_operations(), GenerationMode):
        operation = result.ok()
        if mode is GenerationMode.NEGATIVE and not (
            {"requestBody", "parameters"} & set(operation.definition.raw)
        ):
            continue  # nothing in the request to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
        )
        def fuzz(case: Any) -> None:
            # Whether a schema-valid row can be scored depends on the model (values far outside the
            # training data overflow inside float32 graphs and are refused with a documented 400).
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, excluded_checks=[positive_data_acceptance]
            )
            by_status = sent.setdefault(f"{case.operation.label} ({case.meta.generation.mode.value})", {})
            by_status[response.status_code] = by_status.get(response.status_code, 0) + 1

        fuzz()
    total = sum(sum(codes.values()) for codes in sent.values())
    print(f"fuzz: {total} requests, 0 5xx, 0 schema violations; by route and status: {sent}")
    assert {"POST /v2/models/{model}/infer (negative)", "POST /admin/reload (positive)"} <= set(sent), (
        "OIP, admin"
    )
