"""A link profile: everything that differs between two ISO 8583 bill links, as data.

Each bank link agrees its own dialect (field encodings, processing codes,
response codes, channel codes, whether a logon must come first). A profile is
one JSON file; `load_profile("bank_kalbar")` reads a built-in one from
`profiles/`, `load_profile("/path/to/file.json")` any other. Loading checks
every entry and names the field, the problem and what would be accepted.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import iso8583.specs

from bank_adapters.base import AdapterSettingsError

PROFILES_DIR = Path(__file__).parent / "profiles"

# The neutral outcomes every profile must map to one of its response codes.
RESPONSE_CODE_KEYS = (
    "approved",
    "inquiry.open",
    "inquiry.unknown",
    "inquiry.expired",
    "inquiry.paid",
    "pay.posted",
    "pay.replayed",
    "pay.paid_bill",
    "pay.wrong_amount",
    "pay.unknown_code",
    "pay.expired",
    "pay.conflict",
    "pay.reversed",
    "reverse.reversed",
    "reverse.already_reversed",
    "reverse.unknown",
    "status.posted",
    "status.reversed",
    "status.not_found",
    "invalid_amount",
    "acquirer_not_allowed",
    "format_error",
    "too_late",
    "cutoff",
    "not_logged_on",
    "malfunction",
)
# Outcomes a profile may map; left out, they take the code of the outcome named here.
OPTIONAL_RESPONSE_CODE_KEYS = {
    "busy": "malfunction",  # the too-many-requests fault: "try later" (commonly 91, issuer unavailable)
}

CONTENT_TYPES = ("n", "an", "ans", "b")
PROCESSING_KINDS = ("inquiry", "payment", "status")
# What the handler reads without checking: a profile may require more, never less.
REQUIRED_AT_LEAST = {
    "0200": ("2", "3", "4", "7", "11", "32", "37"),
    "0220": ("2", "3", "4", "7", "11", "32", "37"),
    "0400": ("3", "7", "11", "32", "37", "90"),
    "0420": ("3", "7", "11", "32", "37", "90"),
    "0800": ("70",),
}
_FIELD_KEYS_REQUIRED = ("data_enc", "len_enc", "len_type", "max_len")
_WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class ProfileError(AdapterSettingsError):
    """A profile file that cannot be used; the message names the entry."""


@dataclass(frozen=True, slots=True)
class BillDataItem:
    name: str
    width: int
    item: tuple[BillDataItem, ...] = ()


@dataclass(frozen=True, slots=True)
class CutoffWindow:
    """A daily local-time window in which the biller takes no new inquiries or payments."""

    start_minute: int
    end_minute: int

    @classmethod
    def parse(cls, text: str) -> CutoffWindow | None:
        text = text.strip()
        if not text:
            return None
        match = _WINDOW.match(text)
        if match is None:
            raise ProfileError(f"cutoff_window_local {text!r}: expected 'HH:MM-HH:MM' (24 h local time) or ''", key="cutoff_window_local", adapter="iso8583")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        return cls(h1 * 60 + m1, h2 * 60 + m2)

    def contains(self, local: dt.datetime) -> bool:
        minute = local.hour * 60 + local.minute
        if self.start_minute <= self.end_minute:
            return self.start_minute <= minute < self.end_minute
        return minute >= self.start_minute or minute < self.end_minute  # spans midnight


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str
    spec: Mapping[str, Mapping[str, Any]]  # pyiso8583 spec dict, all fields
    content: Mapping[str, str]  # field -> "n" / "an" / "ans" / "b"
    acquirers: frozenset[str]  # empty: any acquirer
    processing_codes: Mapping[str, str]  # kind -> DE3 prefix
    currency: str
    amount_minor_digits: int
    channel_codes: Mapping[str, str]
    logon_required: bool
    cutoff_window: CutoffWindow | None
    utc_offset_minutes: int
    required_fields: Mapping[str, tuple[str, ...]]
    echo_fields: tuple[str, ...]
    bill_data_layout: tuple[BillDataItem, ...]
    response_codes: Mapping[str, str]
    response_code_meanings: Mapping[str, str]

    def code(self, key: str) -> str:
        if key not in self.response_codes and key in OPTIONAL_RESPONSE_CODE_KEYS:
            return self.response_codes[OPTIONAL_RESPONSE_CODE_KEYS[key]]
        return self.response_codes[key]

    def processing_kind(self, processing_code: str) -> str | None:
        for kind, prefix in self.processing_codes.items():
            if processing_code.startswith(prefix):
                return kind
        return None

    def local_now(self, now_utc: dt.datetime | None = None) -> dt.datetime:
        now_utc = now_utc or dt.datetime.now(dt.UTC)
        return now_utc + dt.timedelta(minutes=self.utc_offset_minutes)

    def with_overrides(self, settings: Mapping[str, Any]) -> Profile:
        """Apply the per-deployment settings that may override profile data."""
        changes: dict[str, Any] = {}
        if "logon_required" in settings:
            changes["logon_required"] = parse_bool("logon_required", settings["logon_required"])
        if "cutoff_window_local" in settings:
            changes["cutoff_window"] = CutoffWindow.parse(str(settings["cutoff_window_local"]))
        if not changes:
            return self
        from dataclasses import replace

        return replace(self, **changes)


def parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ProfileError(f"{name} {value!r}: expected true or false", key=name, adapter="iso8583")


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = PROFILES_DIR / f"{name_or_path}.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.json")))
        raise ProfileError(f"profile {name_or_path!r}: no such file {path}; built-in profiles: {known}") from None
    except json.JSONDecodeError as error:
        raise ProfileError(f"profile {path}: not valid JSON ({error})") from None
    return profile_from_dict(raw, source=str(path))


def profile_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Profile:
    def need(key: str, kind: type) -> Any:
        if key not in raw:
            raise ProfileError(f"profile {source}: missing {key!r}")
        if not isinstance(raw[key], kind):
            raise ProfileError(f"profile {source}: {key!r} must be a {kind.__name__}, got {type(raw[key]).__name__}")
        return raw[key]

    spec, content = _build_spec(need("base_spec", str), need("fields", dict), source)
    processing_codes = dict(need("processing_codes", dict))
    for kind in PROCESSING_KINDS:
        prefix = processing_codes.get(kind)
        if not isinstance(prefix, str) or not prefix.isdigit() or not 1 <= len(prefix) <= 6:
            raise ProfileError(f"profile {source}: processing_codes.{kind} {prefix!r}: expected 1 to 6 digits")
    prefixes = list(processing_codes.values())
    for a in prefixes:
        for b in prefixes:
            if a is not b and a.startswith(b):
                raise ProfileError(f"profile {source}: processing code prefixes {a!r} and {b!r} overlap")

    response_codes = dict(need("response_codes", dict))
    missing = [key for key in RESPONSE_CODE_KEYS if key not in response_codes]
    if missing:
        raise ProfileError(f"profile {source}: response_codes lacks {', '.join(missing)}")
    for key, code in response_codes.items():
        if not isinstance(code, str) or len(code) != 2 or not code.isalnum():
            raise ProfileError(f"profile {source}: response_codes.{key} {code!r}: expected two letters or digits")
    meanings = dict(raw.get("response_code_meanings", {}))
    undocumented = sorted({code for code in response_codes.values() if code not in meanings})
    if undocumented:
        raise ProfileError(f"profile {source}: response_code_meanings lacks {', '.join(undocumented)}")

    required_fields = {mti: tuple(fields) for mti, fields in need("required_fields", dict).items()}
    for mti, needed in REQUIRED_AT_LEAST.items():
        lacking = [field for field in needed if field not in required_fields.get(mti, ())]
        if lacking:
            raise ProfileError(f"profile {source}: required_fields.{mti} must include {', '.join(lacking)}")
    for mti, fields in required_fields.items():
        for field in fields:
            if field not in spec:
                raise ProfileError(f"profile {source}: required_fields.{mti} names unknown field {field!r}")

    minor = need("amount_minor_digits", int)
    if not 0 <= minor <= 3:
        raise ProfileError(f"profile {source}: amount_minor_digits {minor}: expected 0 to 3")
    offset = raw.get("utc_offset_minutes", 0)
    if not isinstance(offset, int) or not -14 * 60 <= offset <= 14 * 60:
        raise ProfileError(f"profile {source}: utc_offset_minutes {offset!r}: expected minutes within +-840")

    return Profile(
        name=need("name", str),
        description=str(raw.get("description", "")),
        spec=spec,
        content=content,
        acquirers=frozenset(str(a) for a in raw.get("acquirers", [])),
        processing_codes=processing_codes,
        currency=need("currency", str),
        amount_minor_digits=minor,
        channel_codes=dict(raw.get("channel_codes", {})),
        logon_required=parse_bool("logon_required", need("logon_required", bool)),
        cutoff_window=CutoffWindow.parse(str(raw.get("cutoff_window_local", ""))),
        utc_offset_minutes=offset,
        required_fields=required_fields,
        echo_fields=tuple(need("echo_fields", list)),
        bill_data_layout=_layout(need("bill_data_layout", list), source),
        response_codes=response_codes,
        response_code_meanings=meanings,
    )


def _build_spec(base_name: str, fields: Mapping[str, Any], source: str) -> tuple[dict, dict]:
    base = getattr(iso8583.specs, base_name, None)
    if not isinstance(base, dict):
        raise ProfileError(
            f"profile {source}: base_spec {base_name!r}: expected a pyiso8583 spec such as 'default_ascii'"
        )
    spec = {key: dict(value) for key, value in base.items()}
    content = {key: ("b" if value["data_enc"] == "b" else "ans") for key, value in spec.items()}
    for key, value in fields.items():
        if key not in spec:
            raise ProfileError(f"profile {source}: fields.{key}: not a field of ISO 8583 (t, h, p, 1..128)")
        if not isinstance(value, dict):
            raise ProfileError(f"profile {source}: fields.{key} must be an object")
        value = dict(value)
        for required in _FIELD_KEYS_REQUIRED:
            if required not in value:
                raise ProfileError(f"profile {source}: fields.{key} lacks {required!r}")
        if value["len_type"] not in (0, 1, 2, 3, 4):
            raise ProfileError(f"profile {source}: fields.{key}.len_type {value['len_type']!r}: expected 0 to 4")
        kind = value.pop("content", "b" if value["data_enc"] == "b" else "ans")
        if kind not in CONTENT_TYPES:
            raise ProfileError(f"profile {source}: fields.{key}.content {kind!r}: expected one of {CONTENT_TYPES}")
        spec[key] = value
        content[key] = kind
    return spec, content


def _layout(items: list, source: str) -> tuple[BillDataItem, ...]:
    out = []
    for index, item in enumerate(items):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("width"), int)
        ):
            raise ProfileError(f"profile {source}: bill_data_layout[{index}]: expected {{'name': str, 'width': int}}")
        out.append(BillDataItem(item["name"], item["width"], _layout(item.get("item", []), source)))
    return tuple(out)
