"""The committed documents in openapi/ are what the code generates."""

from pathlib import Path

from api.specs import openapi_document, render

OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert OPENAPI.read_text() == render(openapi_document()), (
        "openapi/openapi.json is stale: run `.venv/bin/itemrooms openapi` and commit it"
    )


def test_openapi_lists_the_operational_routes() -> None:
    paths = openapi_document()["paths"]
    assert {"/healthz", "/readyz"} <= set(paths)
