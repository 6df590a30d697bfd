"""The committed documents in openapi/ are what the code generates."""

from pathlib import Path

from itemrooms.api.specs import (
    asyncapi_document,
    openapi_document,
    render,
    render_asyncapi,
    write_specs,
)

OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
ASYNCAPI = OPENAPI.with_name("asyncapi.yaml")


def test_committed_openapi_matches_the_code() -> None:
    assert OPENAPI.read_text() == render(openapi_document()), (
        "openapi/openapi.json is stale: run `.venv/bin/itemrooms openapi` and commit it"
    )


def test_openapi_lists_the_operational_routes() -> None:
    paths = openapi_document()["paths"]
    assert {"/healthz", "/readyz"} <= set(paths)


def test_committed_asyncapi_matches_the_code() -> None:
    assert ASYNCAPI.read_text() == render_asyncapi(asyncapi_document()), (
        "openapi/asyncapi.yaml is stale: run `.venv/bin/itemrooms openapi` and commit it"
    )


def test_write_specs_writes_both_documents(tmp_path: Path) -> None:
    written = write_specs(tmp_path / "out")
    assert [p.name for p in written] == ["openapi.json", "asyncapi.yaml"]
    assert written[1].read_text() == ASYNCAPI.read_text()
