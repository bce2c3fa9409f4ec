"""Property tests of the decoder: whatever the bytes, it answers a dict or a
MessageError (never another exception), and what it accepts re-encodes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bank_adapters.iso8583 import codec
from bank_adapters.iso8583.profile import load_profile

KALBAR = load_profile("bank_kalbar")
SEEDS = [
    codec.encode(doc, KALBAR)
    for doc in (
        {
            "t": "0200",
            "2": "12345678901",
            "3": "500000",
            "4": "250000",
            "7": "0615103000",
            "11": "000042",
            "32": "123",
            "37": "000000000777",
            "48": "PT Sungai Kapuas",
            "49": "360",
        },
        {"t": "0800", "7": "0615103000", "11": "000043", "70": "001"},
        {
            "t": "0400",
            "2": "12345678901",
            "3": "500000",
            "4": "250000",
            "7": "0615103000",
            "11": "000044",
            "32": "123",
            "37": "000000000777",
            "90": "0" * 42,
        },
    )
]
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_or_error(body: bytes) -> dict[str, str] | None:
    try:
        doc = codec.decode(body, KALBAR)
    except codec.MessageError as error:
        assert error.mti is None or (len(error.mti) == 4 and error.mti.isdigit())
        for key, value in error.fields.items():
            assert codec.check_content(KALBAR.content[key], value)
        return None
    assert doc["t"].isdigit()
    return doc


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_as_anything_but_a_message_error(body):
    decode_or_error(body)


@FUZZ
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 400),
)
def test_mutated_valid_messages_decode_or_fail_cleanly(seed, flips, cut):
    body = bytearray(seed)
    for position, value in flips:
        body[position % len(body)] = value
    doc = decode_or_error(bytes(body[: max(0, len(body) - cut % 8)]))
    if doc is not None:
        again = codec.decode(codec.encode({k: v for k, v in doc.items() if k not in ("p", "1")}, KALBAR), KALBAR)
        assert again["t"] == doc["t"]


@FUZZ
@given(st.binary(min_size=0, max_size=300), st.integers(0, 0xFFFF))
async def test_random_streams_frame_or_close(data, length):
    import asyncio

    reader = asyncio.StreamReader()
    reader.feed_data(length.to_bytes(2, "big") + data)
    reader.feed_eof()
    try:
        frame = await codec.read_frame(reader, 256)
    except codec.FrameClosed:
        return
    assert frame.oversized == (length > 256)
