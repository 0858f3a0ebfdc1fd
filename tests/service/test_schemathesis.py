"""The service against its own OpenAPI document, by schemathesis.

Every operation of /openapi.json is called with requests generated from its schema (valid ones,
the document's examples, boundary values, and invalid ones) against the live session service
(uvicorn, workers, Redis). Each answer must be no 5xx, carry a status the operation documents,
a documented Content-Type, and a body that conforms to the documented schema. The generation is
seeded and bounded, so a run sends the same ~2500 requests every time, in about a minute on two
cores. Wrong methods, content types and bodies by hand: test_hostile.py.
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_schema_conformance, status_code_conformance,
)

CONFIG = schemathesis.Config.from_dict({
    "seed": 20240917,
    "generation": {"max-examples": 50, "database": "none"},  # the random (fuzzing) phase, per operation
    # The coverage phase walks every field's boundary values. Its invalid values alone would be
    # ~2400 requests each for /v1/kernels and /v1/predict (every parameter of every layer type),
    # minutes of CI; the fuzzing phase sends invalid requests too.
    "phases": {"coverage": {"generation": {"mode": "positive"}}},
})
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def api_schema(service_url):
    return schemathesis.openapi.from_url(f"{service_url}/openapi.json", config=CONFIG)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
def test_every_answer_is_documented(case):
    case.call_and_validate(checks=CHECKS, timeout=60)
