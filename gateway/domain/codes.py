"""Identifiers on the wire: payment codes, NIK, KPJ and NPP."""

from __future__ import annotations

from stdnum import damm
from stdnum.exceptions import InvalidComponent, InvalidFormat, InvalidLength, ValidationError
from stdnum.id import nik as stdnum_nik

from gateway.domain.money import DomainError, require_int

PAYMENT_CODE_SERIAL_DIGITS = 10
PAYMENT_CODE_DIGITS = PAYMENT_CODE_SERIAL_DIGITS + 1
PAYMENT_CODE_SERIAL_MAX = 10**PAYMENT_CODE_SERIAL_DIGITS - 1
NIK_DIGITS = 16
KPJ_DIGITS = 11
NPP_LENGTH = 8


def _is_ascii_digits(text: str) -> bool:
    # str.isdigit alone accepts superscripts and non-Latin digits.
    return text.isascii() and text.isdigit()


def make_payment_code(serial: int) -> str:
    """Payment code ("kode iuran"): 10-digit zero-padded serial + 1 check digit.

    The check digit is Damm's: like Verhoeff it catches every single-digit
    error and every adjacent transposition (Luhn misses 09<->90), and it is one
    table lookup per digit with no separate permutation table, so it is the
    simpler one for a bank's developers to re-implement.
    """
    require_int("serial", serial, minimum=1)
    if serial > PAYMENT_CODE_SERIAL_MAX:
        raise DomainError("serial", f"must be at most {PAYMENT_CODE_SERIAL_MAX:,}, got {serial:,}")
    body = f"{serial:0{PAYMENT_CODE_SERIAL_DIGITS}d}"
    return body + damm.calc_check_digit(body)


def validate_payment_code(text: str) -> str:
    """Return ``text`` if it is a well-formed payment code, else raise DomainError."""
    if not isinstance(text, str) or not _is_ascii_digits(text):
        raise DomainError("payment_code", f"must contain digits 0-9 only, got {text!r}")
    if len(text) != PAYMENT_CODE_DIGITS:
        raise DomainError("payment_code", f"must be {PAYMENT_CODE_DIGITS} digits, got {len(text)}")
    if not damm.is_valid(text):
        raise DomainError("payment_code", f"check digit does not match in {text!r}; the code was mistyped")
    if int(text[:PAYMENT_CODE_SERIAL_DIGITS]) == 0:
        raise DomainError("payment_code", "serial 0000000000 is never issued")
    return text


def validate_nik(text: str) -> str:
    """Return the NIK (separators ' -.' removed) or raise DomainError("nik", reason)."""
    if not isinstance(text, str):
        raise DomainError("nik", f"must be a string of {NIK_DIGITS} digits, got {text!r}")
    try:
        return stdnum_nik.validate(text)
    except InvalidLength:  # before InvalidFormat: stdnum makes it a subclass
        length = len(stdnum_nik.compact(text))
        raise DomainError("nik", f"must be {NIK_DIGITS} digits, got {length}") from None
    except InvalidFormat:
        raise DomainError("nik", f"must contain digits 0-9 only, got {text!r}") from None
    except InvalidComponent:
        pass  # stdnum raises the same error for a bad date and a bad place: tell them apart.
    except ValidationError as error:
        raise DomainError("nik", f"is not a valid NIK: {error}") from None
    try:
        stdnum_nik.get_birth_date(text)
    except ValidationError:
        raise DomainError(
            "nik", "digits 7-12 are not a birth date DDMMYY (women add 40 to the day)"
        ) from None
    raise DomainError("nik", f"unknown province/regency code {stdnum_nik.compact(text)[:4]!r} in digits 1-4")


def nik_regency_code(nik: str) -> str:
    """The Home Affairs (Kemendagri) regency code: the NIK's first 4 digits."""
    return validate_nik(nik)[:4]


def validate_kpj(text: str) -> str:
    """KPJ (participant card number): 11 digits."""
    if not isinstance(text, str) or not _is_ascii_digits(text):
        raise DomainError("kpj", f"must contain digits 0-9 only, got {text!r}")
    if len(text) != KPJ_DIGITS:
        raise DomainError("kpj", f"must be {KPJ_DIGITS} digits, got {len(text)}")
    return text


def validate_npp(text: str) -> str:
    """NPP (employer registration number): 8 letters or digits, e.g. JJ0P4391.

    Lower-case input is accepted and upper-cased: people type it from a card,
    and the letters carry no case distinction.
    """
    if not isinstance(text, str):
        raise DomainError("npp", f"must be {NPP_LENGTH} letters or digits, got {text!r}")
    normalised = text.upper()
    if len(normalised) != NPP_LENGTH:
        raise DomainError("npp", f"must be {NPP_LENGTH} characters (e.g. JJ0P4391), got {len(text)}")
    if not (normalised.isascii() and normalised.isalnum()):
        raise DomainError("npp", f"must contain letters A-Z and digits 0-9 only (e.g. JJ0P4391), got {text!r}")
    return normalised
