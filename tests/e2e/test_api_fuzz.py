"""A bounded schemathesis run over every operation of the OpenAPI document, as an admin on the
example site, on both databases: whatever the generated input, the answer is never a 5xx."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.conftest import login

pytestmark = pytest.mark.usefixtures("example_site")

EXAMPLES = 30  # per operation: the whole run takes well under a minute per database
SKIP = {"/api/v1/auth/logout"}  # it would end the session the rest of the run signs in with


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
            response = case.call(headers=headers)
            codes[response.status_code] += 1
            if response.status_code >= 500:
                errors[f"{case.method} {case.formatted_path}"].append(
                    f"query={case.query} body={str(case.body)[:200]} -> {response.text[:200]}"
                )

        call()
    assert operations > 30 and sum(codes.values()) > operations * 5, codes
    assert dict(errors) == {}, dict(errors)
