"""One request message in, one response message out.

This is the translation layer between the bank's ISO 8583 dialect and the
neutral port: it reads fields, builds `PayCommand`/`ReverseCommand`, calls the
`PaymentsPort`, and renders the neutral outcome as the profile's response
code. It holds no money state of its own: idempotency, reversal tombstones
and replays live in the database behind the port.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from bank_adapters import faults
from bank_adapters.base import (
    InquiryOutcome,
    InquiryResult,
    PayCommand,
    PaymentsPort,
    PayOutcome,
    PayResult,
    ReverseCommand,
)
from bank_adapters.faults import Fault, InboundFaults

from . import bill_data
from .profile import Profile

log = structlog.get_logger("kanal.iso8583")

T = TypeVar("T")

# The neutral outcome of the message being handled ("posted", "replayed",
# "unknown" ...), read by the server for its one log line per message. Each
# message runs in its own task, hence its own context.
OUTCOME: contextvars.ContextVar[str] = contextvars.ContextVar("iso8583_outcome", default="")


@dataclass(slots=True)
class Note:
    """What the conformance log keeps about the message being handled, filled
    in as the handler learns it (set per message task by the server)."""

    partner_id: str | None = None
    kind: str = "unknown"  # inquiry, payment, status, advice, reversal, network
    rule: str | None = None
    detail: str | None = None
    fault: str | None = None


NOTE: contextvars.ContextVar[Note] = contextvars.ContextVar("iso8583_note")

# Outcomes that name their rule by themselves (see gateway/callbacks/conformance.py).
OUTCOME_RULES = {
    "inquiry.unknown": "bill-unknown",
    "inquiry.expired": "bill-expired",
    "inquiry.paid": "bill-paid",
    "pay.paid_bill": "bill-paid",
    "pay.wrong_amount": "amount",
    "pay.unknown_code": "bill-unknown",
    "pay.expired": "bill-expired",
    "pay.conflict": "idempotency-key-reused",
    "pay.reversed": "payment-reversed",
    "status.not_found": "transaction-not-found",
    "acquirer_not_allowed": "acquirer",
    "not_logged_on": "logon",
    "cutoff": "cutoff",
    "too_late": "ledger-timeout",
    "malfunction": "internal",
}
MESSAGE_KINDS = {"0800": "network", "0220": "advice", "0400": "reversal", "0420": "reversal-advice"}
# A reserved RRN, ten nines then the magic suffix (see bank_adapters/faults.py).
MAGIC_RRN_PREFIX = "9999999999"


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Where inbound faults come from: a partner's profile and, in sandbox,
    magic values. `partner_ids` names a link's partner by its acquirer (DE32);
    an acquirer not named is the partner `iso8583-<acquirer>`."""

    profile_of: Callable[[str], Awaitable[InboundFaults]] | None = None
    sandbox: bool = False
    magic_latency_ms: int = 3_000
    partner_ids: Mapping[str, str] = field(default_factory=dict)

    def partner_id(self, acquirer: str) -> str:
        return self.partner_ids.get(acquirer) or f"iso8583-{acquirer}"

# Request MTI -> response MTI. The x1 forms are repeats (the bank heard no answer).
RESPONSES = {
    "0200": "0210",
    "0220": "0230",
    "0221": "0230",
    "0400": "0410",
    "0401": "0410",
    "0420": "0430",
    "0421": "0430",
    "0800": "0810",
}

NETWORK_LOGON = "001"
NETWORK_LOGOFF = "002"
NETWORK_CUTOVER = "201"
NETWORK_ECHO = "301"

INQUIRY_CODES = {
    InquiryOutcome.OPEN: "inquiry.open",
    InquiryOutcome.UNKNOWN: "inquiry.unknown",
    InquiryOutcome.EXPIRED: "inquiry.expired",
    InquiryOutcome.PAID: "inquiry.paid",
}


def response_mti(mti: str) -> str | None:
    """The response MTI for a request or advice MTI (0200 -> 0210, 0421 -> 0430);
    None for responses and anything not four digits."""
    if mti in RESPONSES:
        return RESPONSES[mti]
    if len(mti) == 4 and mti.isdigit() and mti[2] in "02468":
        return mti[:2] + str(int(mti[2]) + 1) + "0"
    return None


def acquirer_code(value: str) -> str:
    """DE32 without leading zeros, so that '123' and DE90's '00000000123' agree."""
    return value.lstrip("0") or "0"


@dataclass(slots=True)
class LinkState:
    link_id: str
    logged_on: bool = False
    # The partner of the last message that named its acquirer: messages that
    # cannot be read are logged under it.
    partner_id: str | None = None


@dataclass(frozen=True, slots=True)
class Limits:
    message_deadline_ms: int = 15_000


class PortTimeout(Exception):
    """The port did not answer within the message deadline."""


class Handler:
    def __init__(
        self,
        profile: Profile,
        payments: PaymentsPort,
        limits: Limits,
        now: Callable[[], dt.datetime] | None = None,
        fault_settings: FaultSettings | None = None,
    ) -> None:
        self.profile = profile
        self.payments = payments
        self.limits = limits
        self.fault_settings = fault_settings or FaultSettings()
        self._now = now or (lambda: dt.datetime.now(dt.UTC))
        # Port calls outlive a missed deadline (the bank is told 68 and will send
        # an advice or a reversal); they are kept here so that stop() can wait.
        self.background: set[asyncio.Task] = set()

    # --- entry point ------------------------------------------------------

    async def handle(self, doc: Mapping[str, str], link: LinkState) -> dict[str, str] | None:
        """The response to send, or None when a fault says the bank hears nothing."""
        note = _note()
        mti = doc["t"]
        reply_mti = response_mti(mti)
        assert reply_mti is not None, "the server drops responses and unreadable MTIs before handling"
        if doc.get("32", "").isdigit():
            link.partner_id = note.partner_id = self.fault_settings.partner_id(acquirer_code(doc["32"]))
        else:
            note.partner_id = link.partner_id
        if mti not in RESPONSES:
            return self.refuse(doc, reply_mti, "format_error", "mti", f"MTI {mti} is not accepted on this link")
        base = mti[:3] + "0"
        note.kind = message_kind(self.profile, doc)
        missing = [f for f in self.profile.required_fields.get(base, ()) if not doc.get(f)]
        if missing:
            detail = ", ".join(f"DE{f}" for f in missing) + f" missing (MTI {mti} needs them on this link)"
            return self.refuse(doc, reply_mti, "format_error", "field-mandatory", detail)
        # Checked before network management too: a logon (or echo) naming an
        # acquirer the profile does not serve gets 05 and logs nothing on.
        # DE32 is optional on 0800 and required (by the profile) on the rest.
        if (base != "0800" or doc.get("32")) and not self._serves(doc.get("32", "")):
            allowed = ", ".join(sorted(self.profile.acquirers))
            detail = f"DE32 {doc.get('32', '')}; this link takes {allowed}"
            return self.refuse(doc, reply_mti, "acquirer_not_allowed", "acquirer", detail)
        if base == "0800":
            return self._network(doc, link)
        if self.profile.logon_required and not link.logged_on:
            return self.refuse(doc, reply_mti, "not_logged_on", "logon", "send 0800 with DE70 001 first")
        kind = self.profile.processing_kind(doc["3"])
        if kind is None or (base != "0200" and kind != "payment"):
            known = ", ".join(f"{k} {p}xxxx" for k, p in self.profile.processing_codes.items())
            return self.refuse(doc, reply_mti, "format_error", "processing-code", f"DE3 {doc['3']} with MTI {mti}; this link knows {known}")
        if base == "0200" and kind != "status" and self._in_cutoff():
            return self.reply(doc, reply_mti, "cutoff")
        plan = await self._plan(doc, base, kind, note)
        if plan is not None and plan.before is not None:
            note.fault = plan.label
            if plan.before is Fault.TIMEOUT_BEFORE_COMMIT:
                return None
            return self.reply(doc, reply_mti, "busy" if plan.before is Fault.TOO_MANY_REQUESTS else "malfunction")
        response = await self._money(doc, base, kind, reply_mti)
        if plan is None or plan.label is None:
            return response
        note.fault = plan.label
        if plan.latency_ms:
            await asyncio.sleep(plan.latency_ms / 1000)
        if plan.lost_response:
            return None
        if plan.wrong_signature:
            response["37"] = _unmatchable(response.get("37", ""))
        return response

    async def _money(self, doc: Mapping[str, str], base: str, kind: str, reply_mti: str) -> dict[str, str]:
        # Every financial message that carries DE49 is checked, not only payments.
        currency = doc.get("49")
        if currency and currency != self.profile.currency:
            detail = f"DE49 {currency}; this link's currency is {self.profile.currency}"
            return self.refuse(doc, reply_mti, "invalid_amount", "currency", detail)
        try:
            if base == "0200" and kind == "inquiry":
                return await self._inquiry(doc, reply_mti)
            if base == "0200" and kind == "status":
                return await self._status(doc, reply_mti)
            if base in ("0200", "0220"):
                return await self._pay(doc, reply_mti)
            return await self._reverse(doc, reply_mti)
        except PortTimeout:
            log.warning("iso8583.deadline_missed", mti=doc["t"], stan=doc.get("11"), rrn=doc.get("37"))
            return self.reply(doc, reply_mti, "too_late")
        except OriginalDataError as error:
            return self.refuse(doc, reply_mti, "format_error", "original-data", str(error))
        except Exception:  # noqa: BLE001 - a failing port answers 96, never kills the link
            log.exception("iso8583.port_failed", mti=doc["t"], stan=doc.get("11"), rrn=doc.get("37"))
            return self.reply(doc, reply_mti, "malfunction")

    async def _plan(self, doc: Mapping[str, str], base: str, kind: str, note: Note) -> faults.Plan | None:
        """The faults ordered for this money message: a magic value (sandbox)
        or the partner's profile. None when nothing is ordered."""
        settings = self.fault_settings
        magic = _magic(doc, base, kind) if settings.sandbox else None
        profile = None
        if magic is None:
            if settings.profile_of is None or note.partner_id is None:
                return None
            profile = await settings.profile_of(note.partner_id)
            if profile.is_empty():
                return None
        return faults.plan(profile, magic, magic_latency_ms=settings.magic_latency_ms, hold_ms_default=0)

    def refuse(self, doc: Mapping[str, str], mti: str, outcome_key: str, rule: str, detail: str) -> dict[str, str]:
        """A refusal that names the broken rule and what exactly broke it (for the conformance log)."""
        note = _note()
        note.rule, note.detail = rule, detail
        return self.reply(doc, mti, outcome_key)

    def reply(self, doc: Mapping[str, str], mti: str, outcome_key: str, **extra: str) -> dict[str, str]:
        response = {"t": mti}
        for key in self.profile.echo_fields:
            if doc.get(key):
                response[key] = doc[key]
        response["39"] = self.profile.code(outcome_key)
        response.update(extra)
        note = _note()
        if note.rule is None:
            note.rule = OUTCOME_RULES.get(outcome_key)
        return response

    # --- network management ----------------------------------------------

    def _network(self, doc: Mapping[str, str], link: LinkState) -> dict[str, str]:
        code = doc["70"]
        if code == NETWORK_LOGON:
            link.logged_on = True
        elif code == NETWORK_LOGOFF:
            link.logged_on = False
        elif code not in (NETWORK_ECHO, NETWORK_CUTOVER):
            return self.refuse(doc, "0810", "format_error", "network-code", f"DE70 {code}; expected 001, 002, 201 or 301")
        return self.reply(doc, "0810", "approved")

    def _serves(self, acquirer: str) -> bool:
        """Whether the profile serves this DE32: a profile listing no acquirers serves any."""
        return not self.profile.acquirers or acquirer_code(acquirer) in self.profile.acquirers

    def _in_cutoff(self) -> bool:
        window = self.profile.cutoff_window
        return window is not None and window.contains(self.profile.local_now(self._now()))

    # --- money --------------------------------------------------------------

    async def _inquiry(self, doc: Mapping[str, str], mti: str) -> dict[str, str]:
        result = await self._call(lambda: self.payments.inquire(doc["2"]))
        OUTCOME.set(result.outcome.value)
        key = INQUIRY_CODES[result.outcome]
        if result.outcome is not InquiryOutcome.OPEN:
            return self.reply(doc, mti, key)
        return self.reply(doc, mti, key, **{"4": self._amount_field(result.amount_rupiah), "48": self._bill(result)})

    async def _pay(self, doc: Mapping[str, str], mti: str) -> dict[str, str]:
        amount_rupiah = self._amount_rupiah(doc)
        if amount_rupiah is None:
            minor = self.profile.amount_minor_digits
            detail = f"DE4 {doc['4']}: must be above zero" + (f" with {minor} minor digits of 0" if minor else " (whole rupiah)")
            return self.refuse(doc, mti, "invalid_amount", "amount-format", detail)
        channel, key = self._identity(doc)
        command = PayCommand(
            payment_code=doc["2"],
            amount_rupiah=amount_rupiah,
            channel=channel,
            idempotency_key=key,
            bank_reference=doc["37"],
        )
        result = await self._call(lambda: self.payments.pay(command))
        OUTCOME.set(result.outcome.value)
        outcome_key = f"pay.{result.outcome.value}"
        if result.outcome in (PayOutcome.POSTED, PayOutcome.REPLAYED):
            return self.reply(doc, mti, outcome_key, **{"48": self._bill(result)})
        return self.reply(doc, mti, outcome_key)

    async def _reverse(self, doc: Mapping[str, str], mti: str) -> dict[str, str]:
        channel, key = self._original_identity(doc)
        result = await self._call(
            lambda: self.payments.reverse(ReverseCommand(channel, key, reason=f"ISO 8583 {doc['t']}"))
        )
        OUTCOME.set(result.outcome.value)
        return self.reply(doc, mti, f"reverse.{result.outcome.value}")

    async def _status(self, doc: Mapping[str, str], mti: str) -> dict[str, str]:
        channel, key = self._original_identity(doc)
        result = await self._call(lambda: self.payments.status(channel, key))
        OUTCOME.set(result.outcome.value)
        outcome_key = f"status.{result.outcome.value}"
        if result.amount_rupiah:
            return self.reply(doc, mti, outcome_key, **{"4": self._amount_field(result.amount_rupiah)})
        return self.reply(doc, mti, outcome_key)

    async def _call(self, call: Callable[[], Awaitable[T]]) -> T:
        task = asyncio.ensure_future(call())
        self.background.add(task)
        task.add_done_callback(self._forget)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self.limits.message_deadline_ms / 1000)
        except TimeoutError:
            raise PortTimeout from None

    def _forget(self, task: asyncio.Task) -> None:
        self.background.discard(task)
        # Reading the exception marks it retrieved: a call that failed after its
        # deadline was already answered 68, and handle() logs the ones it awaited.
        if not task.cancelled():
            task.exception()

    # --- field helpers --------------------------------------------------------

    def _identity(self, doc: Mapping[str, str]) -> tuple[str, str]:
        """(channel, idempotency key) of a payment: acquirer, STAN, RRN, transmission time.
        An advice that names its original in DE90 is keyed by that original."""
        if doc.get("90") and doc["t"][:3] == "022":
            return self._original_identity(doc)
        acquirer = acquirer_code(doc["32"])
        return f"iso8583:{acquirer}", f"{acquirer}:{doc['11']}:{doc['37']}:{doc['7']}"

    def _original_identity(self, doc: Mapping[str, str]) -> tuple[str, str]:
        original = parse_original(doc.get("90", ""))
        acquirer = acquirer_code(original.acquirer) if original.acquirer.strip("0") else acquirer_code(doc["32"])
        return f"iso8583:{acquirer}", f"{acquirer}:{original.stan}:{doc['37']}:{original.transmitted}"

    def _amount_rupiah(self, doc: Mapping[str, str]) -> int | None:
        """DE4 in whole rupiah; None when it is zero or has minor units (the currency is checked by _money)."""
        rupiah, minor = divmod(int(doc["4"]), 10**self.profile.amount_minor_digits)
        if minor or rupiah <= 0:
            return None
        return rupiah

    def _amount_field(self, amount_rupiah: int) -> str:
        return str(amount_rupiah * 10**self.profile.amount_minor_digits)

    def _bill(self, result: InquiryResult | PayResult) -> str:
        """DE48: the same cells for an inquiry and for a payment or advice of the same bill."""
        values = {
            "payer_name": result.payer_name,
            "period": result.period.replace("-", ""),
            "due_date": result.due_date.strftime("%Y%m%d") if result.due_date else "",
            "detail_count": len(result.details),
            "details": [{"code": d.code, "amount_rupiah": d.amount_rupiah} for d in result.details],
        }
        return bill_data.render(self.profile.bill_data_layout, values)


def message_kind(profile: Profile, doc: Mapping[str, str]) -> str:
    """What a message is for the log: network, advice, reversal,
    reversal-advice, or a 0200's inquiry, payment or status (by DE3)."""
    mti = doc.get("t", "")
    base = mti[:3] + "0" if len(mti) == 4 else ""
    if base == "0200":
        return profile.processing_kind(doc.get("3", "")) or "financial"
    return MESSAGE_KINDS.get(base, "unknown")


def _note() -> Note:
    """This message's note; a throwaway one outside the server (direct calls in tests)."""
    try:
        return NOTE.get()
    except LookupError:
        note = Note()
        NOTE.set(note)
        return note


def _magic(doc: Mapping[str, str], base: str, kind: str) -> Fault | None:
    """A magic value in this message: the reserved payment code 999999999NN in
    DE2 (any money message), or the reserved RRN 9999999999NN in DE37 of an
    original 0200 inquiry or payment. Advices, reversals and status requests
    never take a magic RRN, so the bank's recovery path always gets through."""
    fault = faults.magic_suffix(doc.get("2"))
    if fault is not None:
        return fault
    rrn = doc.get("37", "")
    if base == "0200" and kind in ("inquiry", "payment") and len(rrn) == 12 and rrn.startswith(MAGIC_RRN_PREFIX):
        return faults.MAGIC.get(rrn[-2:])
    return None


def _unmatchable(rrn: str) -> str:
    """The response's RRN changed so that it matches no request: on links with
    no MAC, this is the integrity check a bank has, and the wrong-signature
    fault breaks it."""
    digits = rrn.rjust(12, "0")[-12:]
    flipped = "".join(str((int(c) + 5) % 10) if c.isdigit() else "0" for c in digits[-4:])
    return digits[:-4] + flipped


class OriginalDataError(ValueError):
    """DE90 is missing or not 42 digits."""


@dataclass(frozen=True, slots=True)
class OriginalData:
    mti: str
    stan: str
    transmitted: str  # DE7 of the original, MMDDhhmmss
    acquirer: str
    forwarder: str


def parse_original(de90: str) -> OriginalData:
    if len(de90) != 42 or not de90.isdigit():
        raise OriginalDataError(f"DE90 {de90!r}: expected 42 digits (MTI 4, STAN 6, DE7 10, acquirer 11, forwarder 11)")
    return OriginalData(de90[0:4], de90[4:10], de90[10:20], de90[20:31], de90[31:42])


def original_data(mti: str, stan: str, transmitted: str, acquirer: str, forwarder: str = "") -> str:
    """Build DE90 for a reversal or advice of the given original message."""
    return f"{mti:0>4}{stan:0>6}{transmitted:0>10}{acquirer:0>11}{forwarder:0>11}"
