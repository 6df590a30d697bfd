"""Contract testing: schemathesis generates requests from the OpenAPI document and
sends them to a real server (with valid tokens); no response may be a server error
or break the schema. (Driven through schemathesis's Python API: its pytest plugin
does not support pytest 9 yet.)"""

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from itemrooms.auth.tokens import mint_token
from tests.conftest import SECRET, server_env
from tests.support.server import ServerProcess

ALL_SCOPES = ["items:read", "items:write", "items:admin"]
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def contract_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(server_env(), cwd=tmp_path_factory.mktemp("contract")).start()
    yield proc
    proc.stop()


def test_no_server_errors_and_no_schema_violations(contract_server: ServerProcess) -> None:
    schema = schemathesis.openapi.from_url(f"{contract_server.http_url}/openapi.json")
    token = mint_token(SECRET, "contract", scope=ALL_SCOPES)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/items/{item_id}/messages", "/metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, timeout=10)

        check()
    assert contract_server.process is not None and contract_server.process.poll() is None
