"""A frame built once for every member, and held once."""

import pytest
from websockets.frames import Frame
from websockets.streams import StreamReader

from itemrooms.api.hub.outgoing import Outgoing


def parse(wire: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 200_000])
def test_text_and_binary_frames_round_trip_at_every_length_encoding(size: int) -> None:
    text = Outgoing("é" * (size // 2) + "x" * (size % 2))
    binary = Outgoing(data=bytes(range(256)) * (size // 256) + b"\x00" * (size % 256))
    expected_text, expected_data = text.text, binary.data
    for out in (text, binary):
        assert out.wire() is out.wire()  # built once
    assert parse(text.wire()).data.decode() == expected_text
    assert parse(binary.wire()).data == expected_data
    # Once framed, only the frame is kept, and the ASGI message comes from it.
    assert text.text is None and binary.data is None
    assert text.asgi() == {"type": "websocket.send", "text": expected_text}
    assert binary.asgi() == {"type": "websocket.send", "bytes": expected_data}


def test_an_outgoing_frame_is_text_or_binary() -> None:
    with pytest.raises(ValueError):
        Outgoing()
    with pytest.raises(ValueError):
        Outgoing("a", b"a")
