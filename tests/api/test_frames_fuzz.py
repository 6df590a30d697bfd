"""Property-based: no text a client can send makes the frame parser fail other than
with a FrameError (which becomes an ``error`` frame, the connection staying open)."""

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from itemrooms.api.frames import FrameError, Ping, Publish, Refresh, parse_client_frame

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=40,
)
frame_like = st.dictionaries(
    st.sampled_from(["type", "data", "ref", "token", "extra"]) | st.text(max_size=8),
    st.sampled_from(["publish", "ping", "refresh", "PUBLISH", ""]) | json_values,
)


def parses_or_refuses(text: str) -> None:
    try:
        frame = parse_client_frame(text, max_depth=8)
    except FrameError as exc:
        assert exc.code in {"invalid_json", "invalid_frame", "unknown_type", "too_deep"}
        assert isinstance(exc.detail, str) and exc.detail
        return
    assert isinstance(frame, Publish | Ping | Refresh)
    if isinstance(frame, Publish):
        json.loads(frame.data)  # what we forward is valid JSON


@settings(max_examples=150, deadline=None)
@given(st.text())
def test_any_text(text: str) -> None:
    parses_or_refuses(text)


@settings(max_examples=150, deadline=None)
@given(frame_like)
def test_any_frame_like_object(frame: dict[str, Any]) -> None:
    parses_or_refuses(json.dumps(frame))


@settings(max_examples=100, deadline=None)
@given(json_values)
def test_any_json_value(value: Any) -> None:
    parses_or_refuses(json.dumps(value))
