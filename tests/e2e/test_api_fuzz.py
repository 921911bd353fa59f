"""A bounded schemathesis run over every operation of the OpenAPI document, as an admin on the
example site, on both databases: whatever the generated input, the answer is never a 5xx, and it
is what the document declares (status code, content type, body schema)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import login

pytestmark = pytest.mark.usefixtures("example_site")

EXAMPLES = 30  # per operation: the whole run takes well under a minute per database
SKIP = {"/api/v1/auth/logout"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]  # it would end the session the rest of the run signs in with


def test_no_operation_answers_a_server_error(app, client, make_user):
    user, password = make_user({"role": "admin"})
    headers = login(client, user.email, password)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    errors: dict[str, list[str]] = defaultdict(list)
    codes: Counter[int] = Counter()
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in SKIP:
            continue
        operations += 1

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            response = case.call_and_validate(headers=headers, checks=CHECKS)
            codes[response.status_code] += 1

        try:
            call()
        except Exception as exc:  # schemathesis' failure report: keep it, go on with the others
            errors[f"{operation.method.upper()} {operation.path}"].append(str(exc).split("Schema at")[0][:600])
    assert operations > 30 and sum(codes.values()) > operations * 5, codes
    assert dict(errors) == {}, dict(errors)
