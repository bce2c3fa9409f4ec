"""Framing, codec, biller data and profile loading: pure, no sockets, no database."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from bank_adapters.iso8583 import bill_data, codec
from bank_adapters.iso8583.handler import original_data, parse_original, response_mti
from bank_adapters.iso8583.profile import (
    PROFILES_DIR,
    CutoffWindow,
    ProfileError,
    load_profile,
    profile_from_dict,
)

KALBAR = load_profile("bank_kalbar")

PAYMENT = {
    "t": "0200",
    "2": "12345678901",
    "3": "500000",
    "4": "000000250000",
    "7": "0615103000",
    "11": "000042",
    "12": "173000",
    "13": "0615",
    "18": "6017",
    "32": "123",
    "37": "000000000777",
    "49": "360",
}


def reader_with(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


# --- framing -------------------------------------------------------------------


async def test_a_frame_is_a_two_byte_big_endian_length_then_the_body():
    assert codec.frame(b"0800abc") == b"\x00\x070800abc"
    frame = await codec.read_frame(reader_with(b"\x00\x070800abc\x00\x01x"), 4096)
    assert frame == codec.Frame(b"0800abc")


async def test_frames_follow_each_other_on_one_stream():
    reader = reader_with(codec.frame(b"one") + codec.frame(b"second"))
    assert (await codec.read_frame(reader, 4096)).body == b"one"
    assert (await codec.read_frame(reader, 4096)).body == b"second"
    with pytest.raises(codec.FrameClosed):
        await codec.read_frame(reader, 4096)


async def test_a_truncated_frame_is_a_closed_link_not_a_message():
    with pytest.raises(codec.FrameClosed):
        await codec.read_frame(reader_with(b"\x00\x100200"), 4096)
    with pytest.raises(codec.FrameClosed):
        await codec.read_frame(reader_with(b"\x00"), 4096)


async def test_an_oversized_frame_is_skipped_whole_keeping_its_head_for_the_mti():
    body = b"0200" + b"9" * 5000
    reader = reader_with(codec.frame(body) + codec.frame(b"next"))
    frame = await codec.read_frame(reader, 4096)
    assert frame.oversized and frame.body.startswith(b"0200") and len(frame.body) == 64
    assert (await codec.read_frame(reader, 4096)).body == b"next"  # still in step


def test_a_body_longer_than_the_header_can_say_is_refused():
    with pytest.raises(ValueError, match="2-byte"):
        codec.frame(b"x" * 70_000)


# --- codec ----------------------------------------------------------------------


def test_a_payment_round_trips_through_the_profile_spec():
    body = codec.encode(PAYMENT, KALBAR)
    assert body.startswith(b"0200")
    decoded = codec.decode(body, KALBAR)
    assert {k: v for k, v in decoded.items() if k not in ("p", "1")} == PAYMENT


def test_numeric_fields_reject_letters_and_keep_the_mti_and_stan_for_the_answer():
    body = codec.encode(PAYMENT | {"4": "00000025000A"}, KALBAR)
    with pytest.raises(codec.MessageError) as caught:
        codec.decode(body, KALBAR)
    assert caught.value.mti == "0200"
    assert caught.value.fields["11"] == "000042"
    assert "4" not in caught.value.fields
    assert "field 4" in caught.value.reason


def test_a_truncated_message_keeps_what_was_read_before_the_break():
    body = codec.encode(PAYMENT, KALBAR)
    with pytest.raises(codec.MessageError) as caught:
        codec.decode(body[:-5], KALBAR)
    assert caught.value.mti == "0200"
    assert caught.value.fields["2"] == "12345678901"


def test_a_broken_bitmap_leaves_only_the_mti():
    with pytest.raises(codec.MessageError) as caught:
        codec.decode(b"0200ZZZZ000000000000rest", KALBAR)
    assert caught.value.mti == "0200" and caught.value.fields == {}


def test_a_message_without_a_numeric_mti_cannot_be_answered():
    with pytest.raises(codec.MessageError) as caught:
        codec.decode(b"\x00\xff02" + b"0" * 16, KALBAR)
    assert caught.value.mti is None


def test_encoding_fits_values_to_the_spec():
    assert codec.fit(KALBAR, "4", "250000") == "000000250000"
    assert codec.fit(KALBAR, "41", "TERMINAL-LONG") == "TERMINAL"
    assert codec.fit(KALBAR, "48", "Ñoño Café") == "Nono Cafe"


@pytest.mark.parametrize(
    ("request_mti", "reply"),
    [
        ("0200", "0210"),
        ("0220", "0230"),
        ("0221", "0230"),
        ("0400", "0410"),
        ("0401", "0410"),
        ("0420", "0430"),
        ("0421", "0430"),
        ("0800", "0810"),
        ("0300", "0310"),
        ("0210", None),
        ("02X0", None),
    ],
)
def test_response_mti(request_mti, reply):
    assert response_mti(request_mti) == reply


def test_original_data_elements_round_trip():
    de90 = original_data("0200", "42", "0615103000", "123")
    assert len(de90) == 42
    original = parse_original(de90)
    assert (original.mti, original.stan, original.transmitted, original.acquirer) == (
        "0200",
        "000042",
        "0615103000",
        "00000000123",
    )


def test_bill_data_renders_fixed_width_and_reads_back():
    values = {
        "payer_name": "PT Sungai Kapuas Jaya",
        "period": "202506",
        "due_date": "20250715",
        "detail_count": 2,
        "details": [{"code": "JKK", "amount_rupiah": 1200}, {"code": "JHT", "amount_rupiah": 5700}],
    }
    text = bill_data.render(KALBAR.bill_data_layout, values)
    assert text == "PT Sungai Kapuas Jaya         2025062025071502JKK  000000001200JHT  000000005700"
    back = bill_data.parse(KALBAR.bill_data_layout, text)
    assert back["payer_name"] == "PT Sungai Kapuas Jaya"
    assert [(d["code"], int(d["amount_rupiah"])) for d in back["details"]] == [("JKK", 1200), ("JHT", 5700)]


# --- profiles --------------------------------------------------------------------


def test_both_built_in_profiles_load_and_differ_only_in_data():
    other = load_profile("h2h_37_80")
    assert KALBAR.processing_kind("381000") == "inquiry" and KALBAR.processing_kind("501000") == "payment"
    assert other.processing_kind("370000") == "inquiry" and other.processing_kind("800000") == "payment"
    assert KALBAR.processing_kind("800000") is None
    assert KALBAR.logon_required and not other.logon_required
    assert KALBAR.acquirers == {"123"} and other.acquirers == set()


def test_every_response_code_of_a_profile_has_a_meaning():
    for path in PROFILES_DIR.glob("*.json"):
        profile = load_profile(str(path))
        assert set(profile.response_codes.values()) <= set(profile.response_code_meanings)


def raw_kalbar() -> dict:
    return json.loads((PROFILES_DIR / "bank_kalbar.json").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["response_codes"].pop("pay.reversed"), "lacks pay.reversed"),
        (lambda p: p["processing_codes"].update(payment="5X"), "processing_codes.payment"),
        (lambda p: p["processing_codes"].update(status="3"), "overlap"),
        (lambda p: p.update(cutoff_window_local="25:00-01:00"), "HH:MM-HH:MM"),
        (lambda p: p["fields"]["4"].update(content="x"), "fields.4.content"),
        (lambda p: p["fields"].update({"129": {}}), "fields.129"),
        (lambda p: p["response_codes"].update({"pay.expired": "77"}), "response_code_meanings lacks 77"),
        (lambda p: p.pop("logon_required"), "logon_required"),
    ],
)
def test_a_broken_profile_names_what_is_wrong(change, message):
    raw = raw_kalbar()
    change(raw)
    with pytest.raises(ProfileError, match=message):
        profile_from_dict(raw)


def test_an_unknown_profile_lists_the_built_in_ones():
    with pytest.raises(ProfileError, match="bank_kalbar"):
        load_profile("no_such_bank")


def test_settings_override_logon_and_cutoff():
    profile = KALBAR.with_overrides({"logon_required": "false", "cutoff_window_local": "23:50-00:10"})
    assert not profile.logon_required
    assert profile.cutoff_window == CutoffWindow(23 * 60 + 50, 10)


def test_a_cutoff_window_may_span_midnight():
    import datetime as dt

    window = CutoffWindow.parse("23:50-00:10")
    assert window.contains(dt.datetime(2025, 6, 1, 23, 55))
    assert window.contains(dt.datetime(2025, 6, 2, 0, 5))
    assert not window.contains(dt.datetime(2025, 6, 2, 0, 10))
    assert not window.contains(dt.datetime(2025, 6, 1, 12, 0))


def test_every_neutral_outcome_has_a_response_code_in_every_profile():
    from bank_adapters.base import (
        InquiryOutcome,
        PayOutcome,
        ReverseOutcome,
        StatusOutcome,
    )

    keys = [f"inquiry.{o.value}" for o in InquiryOutcome] + [f"pay.{o.value}" for o in PayOutcome]
    keys += [f"reverse.{o.value}" for o in ReverseOutcome] + [f"status.{o.value}" for o in StatusOutcome]
    for path in PROFILES_DIR.glob("*.json"):
        profile = load_profile(str(path))
        assert [key for key in keys if key not in profile.response_codes] == []


# --- settings ------------------------------------------------------------------------


def test_limits_default_safely_and_read_settings_with_units():
    from bank_adapters.iso8583.server import ServerLimits

    assert ServerLimits.from_settings({}) == ServerLimits()
    limits = ServerLimits.from_settings({"frame_bytes_max": "2048", "idle_timeout_ms": " 500 ", "connections_max": "3"})
    assert (limits.frame_bytes_max, limits.idle_timeout_ms, limits.connections_max) == (2048, 500, 3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"idle_timeout_ms": "abc"}, "idle_timeout_ms='abc': expected a whole number"),
        ({"frame_bytes_max": "70000"}, "frame_bytes_max=70000: expected 64 to 65535"),
        ({"connections_max": "0"}, "connections_max=0"),
    ],
)
def test_unusable_limits_name_the_setting(settings, message):
    from bank_adapters.iso8583.server import ServerLimits, SettingsError

    with pytest.raises(SettingsError, match=message):
        ServerLimits.from_settings(settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"port": "http"}, "port='http'"),
        ({"port": "70000"}, "port='70000'"),
        ({"port": "0", "profile": "nope"}, "built-in profiles"),
    ],
)
async def test_the_adapter_refuses_to_start_on_bad_settings(settings, message):
    from bank_adapters.base import AdapterContext
    from bank_adapters.iso8583 import adapter_factory

    adapter = adapter_factory()
    assert (adapter.name, adapter.http_app(None)) == ("iso8583", None)
    with pytest.raises(ValueError, match=message):
        await adapter.start(AdapterContext(payments=None, pool=None, settings=settings))


def test_a_profile_cannot_drop_a_field_the_handler_relies_on():
    raw = raw_kalbar()
    raw["required_fields"]["0400"].remove("90")
    with pytest.raises(ProfileError, match="required_fields.0400 must include 90"):
        profile_from_dict(raw)


def test_partner_ids_setting_reads_acquirers_and_refuses_ids_no_url_could_reach():
    from bank_adapters.iso8583 import parse_partner_ids
    from bank_adapters.iso8583.server import SettingsError

    assert parse_partner_ids(" 123=BANKKALBAR, 456=bank.two ") == {"123": "BANKKALBAR", "456": "bank.two"}
    for item in ("123=..", "123=.", "123=BANK X", "123=a/b", "abc=BANK", "123="):
        with pytest.raises(SettingsError, match=f"partner_ids item {re.escape(repr(item))}"):
            parse_partner_ids(item)
