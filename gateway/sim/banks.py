"""Virtual banks for the simulator: the real SNAP and ISO 8583 clients, over
real sockets, against the gateway the simulator started.

A bank carries out one bill payment (`Payment`) as a bank would, step by
step, and records what every message was answered: inquiry, payment, a
duplicate of the payment (the same message again), an advice (SNAP
flagAdvise=Y, ISO 8583 0220: the bank did not see the first answer), a
reversal (ISO 8583 0400) and, after some reversals, a new payment.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass

import aiohttp

from bank_adapters.iso8583.client import Iso8583Client, LinkDown, ResponseTimeout
from bank_adapters.snap import partners, protocol
from bank_adapters.snap.client import Credentials, SnapClient, SnapError
from gateway.sim.scenario import Bank

SNAP_REQUESTS_PER_SECOND_MAX = 100_000  # the simulator's partners are not the thing under test for rate limits


@dataclass(frozen=True)
class Payment:
    """One payer paying one bill; every choice was drawn before it is sent."""

    payment_code: str
    amount_rupiah: int
    bank: str
    reference: str  # 12 digits: SNAP paymentRequestId / ISO 8583 RRN (field 37)
    inquire: bool = True
    duplicate: bool = False
    advice: bool = False
    reverse: bool = False
    pay_again_after_reversal: bool = False


class Outcomes:
    """Counts of (protocol, step, answer code), and what the codes mean."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.meanings: dict[tuple[str, str], str] = {}

    def add(self, protocol_name: str, step: str, code: str, meaning: str = "") -> None:
        self.counts[(protocol_name, step, code)] += 1
        if meaning:
            self.meanings.setdefault((protocol_name, code), meaning)

    def rows(self) -> list[dict]:
        return [
            {"protocol": p, "step": s, "code": c, "meaning": self.meanings.get((p, c), ""), "count": n}
            for (p, s, c), n in sorted(self.counts.items())
        ]


class VirtualBanks:
    def __init__(self, banks: tuple[Bank, ...], outcomes: Outcomes) -> None:
        self.banks = {b.name: b for b in banks}
        self.outcomes = outcomes
        self.snap: dict[str, SnapClient] = {}
        self.iso: dict[str, list[Iso8583Client]] = {}
        self._iso_next: dict[str, int] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self, gateway, pool, *, concurrency: int) -> None:
        """Register each SNAP bank as a partner (as `kanal partner add` does)
        and open the ISO 8583 links."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 4))
        for bank in self.banks.values():
            if bank.protocol == "snap":
                private_pem, public_pem = protocol.generate_key_pair()
                partner = await partners.register(
                    pool,
                    partners.PartnerRequest(
                        partner_id=bank.name,
                        client_key=f"sim-{bank.name.lower()}",
                        public_key_pem=public_pem,
                        requests_per_second_max=SNAP_REQUESTS_PER_SECOND_MAX,
                    ),
                )
                credentials = Credentials(
                    partner_id=partner.partner_id,
                    client_key=partner.client_key,
                    client_secret=partner.client_secret,
                    private_key_pem=private_pem,
                    channel_id=partner.channel_id,
                    partner_service_id=partner.partner_service_id,
                    encoding=partner.signature_encoding,
                )
                self.snap[bank.name] = SnapClient(gateway.url, credentials, session=self._session, timeout_s=30.0)
            else:
                port = gateway.adapter("iso8583").port
                links = [Iso8583Client("127.0.0.1", port, acquirer=bank.acquirer, timeout_ms=30_000) for _ in range(bank.links)]
                for link in links:
                    await link.connect()
                self.iso[bank.name] = links
                self._iso_next[bank.name] = 0

    async def close(self) -> None:
        for links in self.iso.values():
            for link in links:
                await link.close()
        for client in self.snap.values():
            await client.close()
        if self._session is not None:
            await self._session.close()

    async def pay(self, payment: Payment) -> None:
        bank = self.banks[payment.bank]
        if bank.protocol == "snap":
            await self._pay_snap(self.snap[bank.name], payment)
        else:
            links = self.iso[bank.name]
            n = self._iso_next[bank.name]
            self._iso_next[bank.name] = n + 1
            await self._pay_iso(links[n % len(links)], payment)

    # --- SNAP BI ----------------------------------------------------------------

    def _snap(self, step: str, response) -> None:
        self.outcomes.add("snap", step, response.code or str(response.http_status), str(response.body.get("responseMessage", "")))

    async def _pay_snap(self, client: SnapClient, payment: Payment) -> None:
        try:
            # SNAP links a payment to the last inquiry on the VA: paymentRequestId
            # must equal that inquiryRequestId.
            request_id = f"sim{payment.reference}"
            if payment.inquire:
                self._snap("inquiry", await client.inquiry(payment.payment_code, request_id))
            self._snap("payment", await client.pay(payment.payment_code, payment.amount_rupiah, request_id))
            if payment.duplicate:
                self._snap("duplicate", await client.pay(payment.payment_code, payment.amount_rupiah, request_id))
            if payment.advice:
                self._snap(
                    "advice", await client.pay(payment.payment_code, payment.amount_rupiah, request_id, flag_advise=True)
                )
        except (SnapError, aiohttp.ClientError, TimeoutError) as error:
            self.outcomes.add("snap", "transport", type(error).__name__, str(error)[:80])

    # --- ISO 8583 ----------------------------------------------------------------

    def _iso(self, link: Iso8583Client, step: str, reply) -> None:
        meaning = link.profile.response_code_meanings.get(reply.code, "")
        self.outcomes.add("iso8583", step, reply.code or "none", meaning)

    async def _pay_iso(self, link: Iso8583Client, payment: Payment) -> None:
        try:
            if payment.inquire:
                self._iso(link, "inquiry", await link.inquiry(payment.payment_code, **{"37": payment.reference}))
            original = link.financial("0200", "payment", payment.payment_code, payment.amount_rupiah, **{"37": payment.reference})
            self._iso(link, "payment", await link.request(original))
            if payment.duplicate:
                # The same message again (a bank retry): same STAN, RRN and time.
                self._iso(link, "duplicate", await link.request(original))
            if payment.advice:
                self._iso(link, "advice", await link.advice(original))
            if payment.reverse:
                self._iso(link, "reversal", await link.reverse(original))
                if payment.pay_again_after_reversal:
                    again = dataclasses.replace(payment, reference=_next_reference(payment.reference))
                    retry = link.financial("0200", "payment", again.payment_code, again.amount_rupiah, **{"37": again.reference})
                    self._iso(link, "payment after reversal", await link.request(retry))
        except (TimeoutError, LinkDown, ResponseTimeout) as error:
            self.outcomes.add("iso8583", "transport", type(error).__name__, str(error)[:80])


def _next_reference(reference: str) -> str:
    """A new RRN derived from the old one (the bank's second attempt)."""
    return f"{(int(reference) + 500_000_000_000) % 10**12:012d}"
