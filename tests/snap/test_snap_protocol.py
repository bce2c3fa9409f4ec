"""Unit tests of the pure SNAP rules: no gateway, no database."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from bank_adapters.snap import protocol
from bank_adapters.snap.cli import snap_sign
from bank_adapters.snap.ratelimit import RateLimiter
from schemas.snap import PaymentRequest, ValidationError, first_problem

# Vector computed with openssl, independently of this code:
#   printf 'POST:/snap/v1.0/transfer-va/payment:tok:<sha256 hex>:2025-09-24T10:55:00+07:00' \
#     | openssl dgst -sha512 -hmac s3cret -hex
BODY = '{\n  "a": "b c",\n  "d": 1\n}'
BODY_SHA256 = "9e796b88bd88c2432d21061484e6709da4051cb0a5c83b8bbcfc5b936c94adc5"
VECTOR_HEX = (
    "c0d6197c20a893b52a564bc58fa76179eef188311828efb1dcb4c6fc02f3790c"
    "0f56e0d971e6918443ebf0778f68ff19092f03d4c4bac29395f00d0f27904d78"
)
PATH = "/snap/v1.0/transfer-va/payment"
TIMESTAMP = "2025-09-24T10:55:00+07:00"


def test_minify_drops_whitespace_outside_strings_only():
    assert protocol.minify(BODY) == '{"a":"b c","d":1}'
    assert protocol.minify('{"q": "say \\"hi\\" there" }') == '{"q":"say \\"hi\\" there"}'


def test_string_to_sign_and_body_hash():
    assert protocol.body_sha256_hex(BODY) == BODY_SHA256
    assert protocol.transaction_string_to_sign("post", PATH, "tok", BODY, TIMESTAMP) == f"POST:{PATH}:tok:{BODY_SHA256}:{TIMESTAMP}"


def test_hmac_vector_in_both_encodings():
    string_to_sign = protocol.transaction_string_to_sign("POST", PATH, "tok", BODY, TIMESTAMP)
    hex_signature = protocol.sign_transaction("s3cret", string_to_sign, "hex")
    base64_signature = protocol.sign_transaction("s3cret", string_to_sign, "base64")
    assert hex_signature == VECTOR_HEX
    assert len(base64_signature) == 88
    assert protocol.decode_signature(base64_signature, "base64") == bytes.fromhex(VECTOR_HEX)
    assert protocol.verify_transaction("s3cret", string_to_sign, hex_signature, "hex")
    assert protocol.verify_transaction("s3cret", string_to_sign, base64_signature, "base64")
    assert not protocol.verify_transaction("s3cret", string_to_sign, base64_signature, "hex")
    assert not protocol.verify_transaction("other", string_to_sign, hex_signature, "hex")
    assert not protocol.verify_transaction("s3cret", string_to_sign, "not base64!", "base64")


def test_rsa_token_signature_round_trip_and_tampering():
    private_pem, public_pem = protocol.generate_key_pair()
    key = protocol.load_private_key(private_pem)
    public = protocol.load_public_key(public_pem)
    signature = protocol.sign_token_request(key, "client", TIMESTAMP)
    assert protocol.verify_token_request(public, "client", TIMESTAMP, signature)
    assert not protocol.verify_token_request(public, "client", "2025-09-24T10:55:01+07:00", signature)
    assert not protocol.verify_token_request(public, "other", TIMESTAMP, signature)
    assert not protocol.verify_token_request(public, "client", TIMESTAMP, "%%%")


def test_public_key_must_be_rsa_pem():
    with pytest.raises(ValueError, match="PEM"):
        protocol.load_public_key("not a key")


@pytest.mark.parametrize(
    ("value", "rupiah"), [("0.00", 0), ("1101222.00", 1_101_222), ("9999999999999999.00", 9_999_999_999_999_999)]
)
def test_amounts_accepted(value, rupiah):
    assert protocol.parse_rupiah(value) == rupiah
    assert protocol.format_rupiah(rupiah) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1101222.50", "non-zero decimals"),
        ("1101222.5", "exactly two decimals"),
        ("1101222.000", "exactly two decimals"),
        ("1101222", "exactly two decimals"),
        ("01101222.00", "no leading zero"),
        ("-1.00", "digits"),
        ("1,000.00", "digits"),
        ("10000000000000000.00", "at most 16"),
        (1101222, "must be a string"),
    ],
)
def test_amounts_refused(value, reason):
    with pytest.raises(protocol.AmountError, match=reason):
        protocol.parse_rupiah(value)


def test_timestamps():
    assert protocol.parse_timestamp(TIMESTAMP) == dt.datetime(2025, 9, 24, 3, 55, tzinfo=dt.UTC)
    assert protocol.parse_timestamp("2025-09-24T10:55:00.123+07:00") is not None
    for bad in ("2025-09-24T10:55:00", "2025-09-24 10:55:00+07:00", "yesterday", "2025-13-01T00:00:00+07:00"):
        assert protocol.parse_timestamp(bad) is None
    # The X-EXTERNAL-ID day is the WIB day: 23:30 UTC is already tomorrow in Pontianak.
    assert protocol.wib_day(dt.datetime(2025, 9, 24, 23, 30, tzinfo=dt.UTC)) == dt.date(2025, 9, 25)
    assert protocol.format_timestamp(dt.datetime(2025, 9, 24, 3, 55, tzinfo=dt.UTC)) == TIMESTAMP


def test_partner_service_id_padding():
    assert protocol.pad_partner_service_id("12345", "spaces") == "   12345"
    assert protocol.pad_partner_service_id("12345", "zeros") == "00012345"
    with pytest.raises(ValueError):
        protocol.pad_partner_service_id("123456789", "spaces")


def test_response_codes_and_messages():
    assert protocol.INVALID_AMOUNT.code("25") == "4042513"
    assert protocol.CONFLICT.code("24") == "4092400"
    assert protocol.response_message(protocol.INVALID_FIELD_FORMAT, "paidAmount.value") == "Invalid Field Format [paidAmount.value]"
    assert len(protocol.response_message(protocol.GENERAL_ERROR, "x" * 500)) == 150


def _payment(**changes):
    body = {
        "partnerServiceId": "   12345",
        "customerNo": "12345678901",
        "virtualAccountNo": "   1234512345678901",
        "paymentRequestId": "p1",
        "paidAmount": {"value": "10000.00", "currency": "IDR"},
    }
    body.update(changes)
    import json

    return json.dumps(body)


@pytest.mark.parametrize(
    ("changes", "field", "missing"),
    [
        ({"paymentRequestId": ""}, "paymentRequestId", True),
        ({"paidAmount": None}, "paidAmount", True),
        ({"paidAmount": {"value": "1.10", "currency": "IDR"}}, "paidAmount.value", False),
        ({"paidAmount": {"value": "1.00", "currency": "USD"}}, "paidAmount.currency", False),
        ({"customerNo": 12345678901}, "customerNo", False),
        ({"partnerServiceId": "12345"}, "partnerServiceId", False),
        ({"flagAdvise": "YES"}, "flagAdvise", False),
    ],
)
def test_body_problems_name_the_field(changes, field, missing):
    with pytest.raises(ValidationError) as caught:
        PaymentRequest.model_validate_json(_payment(**changes))
    problem = first_problem(caught.value)
    assert (problem.field, problem.missing) == (field, missing)


def test_rate_limiter_refills():
    limiter = RateLimiter()
    assert limiter.allow("p", 2) and limiter.allow("p", 2)
    assert not limiter.allow("p", 2)
    assert limiter.allow("other", 2)


def test_snap_sign_prints_the_headers_a_bank_sends(tmp_path):
    body = tmp_path / "body.json"
    body.write_text(BODY)
    result = CliRunner().invoke(
        snap_sign,
        ["--client-secret", "s3cret", "--token", "tok", "--body", str(body), "--timestamp", TIMESTAMP, "--encoding", "hex", "--json"],
    )
    assert result.exit_code == 0, result.output
    import json

    shown = json.loads(result.output)
    assert shown["headers"]["X-SIGNATURE"] == VECTOR_HEX
    assert shown["bodySha256"] == BODY_SHA256
    assert "s3cret" not in result.output
