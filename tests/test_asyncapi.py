"""openapi/asyncapi.yaml is a valid AsyncAPI 3.0 document that says what the server does."""

import copy
import json
import re
from functools import cache
from pathlib import Path
from typing import Any, get_args

import jsonschema
import orjson
import pytest
import yaml
from referencing import Registry
from referencing.jsonschema import DRAFT7

from itemrooms.api.asyncapi import ERROR_CODES, frame_models, frame_type
from itemrooms.api.close_codes import Reason
from itemrooms.api.frames import (
    PONG,
    ClientFrame,
    ErrorCode,
    ServerFrame,
    encode_duplicate,
    encode_message,
    encode_presence,
    encode_presence_count,
    encode_presence_list,
    encode_welcome,
    error_frame,
    with_ref,
)
from itemrooms.api.hub.backends.base import Message, Sender, Snapshot
from itemrooms.api.specs import asyncapi_document, render_asyncapi
from itemrooms.auth.credentials import ITEM_ID_PATTERN

ROOT = Path(__file__).resolve().parent.parent
ASYNCAPI = ROOT / "openapi" / "asyncapi.yaml"
SCHEMA = Path(__file__).resolve().parent / "data" / "asyncapi-3.0.0.json"
PROTOCOL = ROOT / "docs" / "PROTOCOL.md"
DOC_URI = "urn:itemrooms:asyncapi"


@cache
def asyncapi_validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema"
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(
        schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )


def errors(document: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in asyncapi_validator().iter_errors(document)
    ]


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document()


@pytest.fixture(scope="module")
def committed() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ASYNCAPI.read_text())
    return loaded


def test_the_committed_document_is_valid_asyncapi_3(committed: dict[str, Any]) -> None:
    assert committed["asyncapi"] == "3.0.0"
    assert errors(committed) == []


def test_yaml_reads_back_as_the_generated_document(document: dict[str, Any]) -> None:
    assert yaml.safe_load(render_asyncapi(document)) == document


def broken(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the value at ``path`` (a/b/c) replaced, or removed."""
    result = copy.deepcopy(document)
    *parents, last = path.split("/")
    node = result
    for key in parents:
        node = node[key]
    if value is REMOVE:
        del node[last]
    else:
        node[last] = value
    return result


REMOVE = object()


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("asyncapi", "2.6.0"),
        ("info/version", REMOVE),
        ("servers/development/protocol", REMOVE),
        ("operations/sendPublish/action", "publish"),
        ("operations/receiveWelcome/channel", "#/channels/room"),
        ("components/securitySchemes/tokenQuery/in", "body"),
        ("components/securitySchemes/bearerHeader/scheme", "basic-ish"),
        ("channels/room/bindings/ws/method", "PUT"),
        ("components/schemas/WelcomeFrame/properties/seq/type", 42),
        ("components/messages/welcome/examples", [{"name": "no payload"}]),
        ("channels/room/unknown", "not an AsyncAPI field"),
    ],
)
def test_the_validator_catches_broken_documents(
    document: dict[str, Any], path: str, value: Any
) -> None:
    assert errors(document) == []
    assert errors(broken(document, path, value)), f"{path} = {value!r} was not caught"


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_every_reference_resolves_inside_the_document(document: dict[str, Any]) -> None:
    found = refs(document)
    assert len(found) > 20
    for ref in found:
        resolve(document, ref)
    assert "$defs" not in json.dumps(document)


def test_every_frame_model_has_its_operation(document: dict[str, Any]) -> None:
    operations = document["operations"]

    def kinds(action: str) -> set[str]:
        return {
            resolve(document, m["$ref"])["$ref"].rsplit("/", 1)[1]
            for op in operations.values()
            if op["action"] == action
            for m in op["messages"]
        }

    assert kinds("receive") == {frame_type(m) for m in frame_models(ServerFrame)} | {"binary"}
    assert kinds("send") == {frame_type(m) for m in frame_models(ClientFrame)} | {"binary"}
    assert {"welcome", "message", "presence", "error", "pong", "refreshed"} <= kinds("receive")
    assert {"publish", "ping", "refresh"} <= kinds("send")
    for model in frame_models(ServerFrame) + frame_models(ClientFrame):
        payload = document["components"]["messages"][frame_type(model)]["payload"]
        assert payload == {"$ref": f"#/components/schemas/{model.__name__}"}


def payload_validator(document: dict[str, Any], kind: str) -> jsonschema.Draft7Validator:
    """Validates one frame against its message's payload schema, refs resolved in the doc."""
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT7.create_resource(document))
    pointer = document["components"]["messages"][kind]["payload"]["$ref"]
    return jsonschema.Draft7Validator({"$ref": DOC_URI + pointer}, registry=registry)


def test_message_examples_match_their_payload_schemas(document: dict[str, Any]) -> None:
    for kind, message in document["components"]["messages"].items():
        if message["contentType"] != "application/json":
            continue
        validator = payload_validator(document, kind)
        for example in message["examples"]:
            validator.validate(example["payload"])
        assert not validator.is_valid({"type": 1})


ALICE = Sender("alice", "c_a")


@pytest.mark.parametrize(
    ("kind", "text"),
    [
        (
            "welcome",
            encode_welcome("42", ALICE, Snapshot(3, "e1", (), True), [("bob", "c_b")], 2, False),
        ),
        ("welcome", encode_welcome("42", ALICE, Snapshot(3, "e1", (), True), [], 5000, True)),
        ("presence_count", encode_presence_count("42", 5000, 120, 7)),
        ("presence_list", encode_presence_list("42", [("alice", "c_a"), ("bob", "c_b")])),
        ("message", encode_message(Message("42", 7, 1_700_000_000_000, ALICE, b"[1]", None))),
        (
            "message",
            with_ref(encode_message(Message("42", 8, 1_700_000_000_001, ALICE, b"{}", "r")), "r"),
        ),
        (
            "message",
            encode_duplicate(Message("42", 9, 1_700_000_000_002, ALICE, b"1", None, "m-1"), "r2"),
        ),
        ("error", error_frame("outcome_unknown", "retry with the same id", "r3")),
        ("presence", encode_presence("42", "leave", "alice", "c_a")),
        ("error", error_frame("invalid_json", "frame is not valid JSON")),
        ("error", error_frame("not_allowed", "no", "r1")),
        ("pong", PONG),
    ],
)
def test_what_the_server_sends_matches_the_document(
    document: dict[str, Any], kind: str, text: str
) -> None:
    payload_validator(document, kind).validate(orjson.loads(text))


def test_payload_schemas_reject_wrong_frames(document: dict[str, Any]) -> None:
    welcome = payload_validator(document, "welcome")
    assert not welcome.is_valid({"type": "welcome", "item_id": "42"})
    publish = payload_validator(document, "publish")
    assert publish.is_valid({"type": "publish", "data": None})
    assert not publish.is_valid({"type": "publish"})
    assert not publish.is_valid({"type": "publish", "data": 1, "ref": "x" * 129})


def protocol_close_table() -> list[tuple[int, str, str]]:
    rows = re.findall(r"^\| (\d{4}) \| `([a-z_]+)` \| (.+?) \|$", PROTOCOL.read_text(), re.M)
    return [(int(code), reason, when) for code, reason, when in rows]


def test_close_codes_cover_every_reason_and_agree_with_the_protocol(
    document: dict[str, Any],
) -> None:
    channel = document["channels"]["room"]
    listed = {c["reason"]: c for c in channel["x-close-codes"]}
    assert list(listed) == [str(r) for r in Reason]
    table = protocol_close_table()
    assert len(table) >= 12
    for code, reason, when in table:
        assert listed[reason]["code"] == code, reason
        assert listed[reason]["when"].startswith(when), reason
    additions = {"invalid_since", "invalid_request", "too_many_connections"}
    assert set(listed) - {reason for _, reason, _ in table} == additions
    for reason in additions:
        assert "addition to PROTOCOL.md v1" in listed[reason]["when"]
    for reason, close in listed.items():
        assert f"| {close['code']} | `{reason}` |" in channel["description"]


def test_error_codes_cover_every_code_the_server_sends(document: dict[str, Any]) -> None:
    """Every literal code given to FrameError, _error or error_frame in api/ is listed."""
    used: set[str] = set()
    for path in (ROOT / "api").rglob("*.py"):
        used |= set(
            re.findall(r'(?:FrameError|_error|error_frame)\(\s*"([a-z_]+)"', path.read_text())
        )
    assert used, "found no error codes in api/: has the pattern changed?"
    assert used <= set(ERROR_CODES)
    message = document["components"]["messages"]["error"]
    assert [c["code"] for c in message["x-error-codes"]] == list(ERROR_CODES)
    expected = {
        "invalid_json", "invalid_frame", "unknown_type", "too_deep", "not_allowed",
        "rate_limited", "invalid_refresh", "unavailable", "outcome_unknown",
    }  # fmt: skip
    assert set(ERROR_CODES) == expected == set(get_args(ErrorCode))
    for code in ERROR_CODES:
        assert f"`{code}`" in message["description"]


def test_channel_parameter_bindings_and_security(document: dict[str, Any]) -> None:
    channel = document["channels"]["room"]
    assert channel["address"] == "/items/{item_id}/ws"
    parameter = resolve(document, channel["parameters"]["item_id"]["$ref"])
    assert parameter["x-pattern"] == ITEM_ID_PATTERN
    assert ITEM_ID_PATTERN in parameter["description"]
    for example in parameter["examples"]:
        assert re.fullmatch(ITEM_ID_PATTERN, example)
    since = channel["bindings"]["ws"]["query"]["properties"]["since"]
    assert since == since | {"type": "integer", "minimum": 0}

    schemes = document["components"]["securitySchemes"]
    assert schemes["bearerHeader"] | {"description": ""} == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "",
    }  # fmt: skip
    places = {
        name: (s["type"], s.get("in"), s.get("name"))
        for name, s in schemes.items()
        if s["type"] == "httpApiKey"
    }
    assert places == {
        "bearerSubprotocol": ("httpApiKey", "header", "Sec-WebSocket-Protocol"),
        "tokenQuery": ("httpApiKey", "query", "token"),
        "sessionCookie": ("httpApiKey", "cookie", "session"),
    }
    for position, scheme in zip(("1st", "2nd", "3rd", "4th"), schemes.values(), strict=True):
        assert scheme["description"].startswith(position)
        assert "first place that holds one decides" in scheme["description"]
    server = document["servers"]["development"]
    assert (server["host"], server["protocol"]) == ("127.0.0.1:8000", "ws")
    assert [resolve(document, s["$ref"]) for s in server["security"]] == list(schemes.values())
