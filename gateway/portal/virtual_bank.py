"""The sandbox "virtual bank": pays a bill the way Bank Kalbar would, through
the real SNAP adapter over HTTP, never by calling the payments service.

The bank is an ordinary SNAP partner. It is registered once per database
(under an advisory lock, so concurrent processes agree) with
`bank_adapters.snap.partners.register`, and its private key is kept in
`portal_virtual_banks` in the same transaction; afterwards every process
reuses it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg
import structlog

from bank_adapters.snap import partners, protocol, store
from bank_adapters.snap.client import Credentials, SnapClient, SnapError, SnapResponse

log = structlog.get_logger("kanal.portal")

PARTNER_ID = "KANAL-PORTAL-VBANK"
CLIENT_KEY = "kanal-portal-virtual-bank"
# Any constant: the advisory lock that serialises the one-time registration.
_REGISTRATION_LOCK_KEY = 0x6B616E616C_7662  # "kanal" "vb"
# One payment is a token, an inquiry and a payment; the client retries each.
PAYMENT_TIMEOUT_S = 10.0


class VirtualBankError(Exception):
    """The SNAP adapter refused: carries its answer for the employer to read."""

    def __init__(self, step: str, response: SnapResponse) -> None:
        super().__init__(f"{step}: {response.code} {response.body.get('responseMessage', '')}")
        self.step = step
        self.response = response


def _credentials(partner: store.Partner, private_key_pem: str) -> Credentials:
    return Credentials(
        partner_id=partner.partner_id,
        client_key=partner.client_key,
        client_secret=partner.client_secret,
        private_key_pem=private_key_pem,
        channel_id=partner.channel_id,
        partner_service_id=partner.partner_service_id,
        encoding=partner.signature_encoding,
    )


async def credentials(pool: asyncpg.Pool) -> Credentials:
    """The virtual bank's SNAP credentials, registering it the first time."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("select pg_advisory_xact_lock($1)", _REGISTRATION_LOCK_KEY)
        private_key_pem = await conn.fetchval(
            "select private_key_pem from portal_virtual_banks where partner_id = $1",
            PARTNER_ID,
        )
        if private_key_pem is None:
            # RSA key generation takes a moment: keep it off the event loop.
            private_key_pem, public_key_pem = await asyncio.to_thread(protocol.generate_key_pair)
            request = partners.PartnerRequest(
                partner_id=PARTNER_ID,
                client_key=CLIENT_KEY,
                public_key_pem=public_key_pem,
                sandbox=True,
            )
            # The partner row and its key commit together: `register` only
            # needs `fetchrow`, which the transaction's connection has.
            partner = await partners.register(conn, request)  # type: ignore[arg-type]
            await conn.execute(
                "insert into portal_virtual_banks (partner_id, private_key_pem) values ($1, $2)",
                PARTNER_ID,
                private_key_pem,
            )
            log.info("portal.virtual_bank_registered", partner_id=PARTNER_ID)
            return _credentials(partner, private_key_pem)
        partner = await store.partner_by_id(conn, PARTNER_ID)  # type: ignore[arg-type]
        if partner is None:
            raise RuntimeError(f"SNAP partner {PARTNER_ID} was deleted while its portal key remains")
        return _credentials(partner, private_key_pem)


@dataclass(frozen=True)
class Receipt:
    payment_code: str
    amount_rupiah: int
    response_code: str
    response_message: str
    payment_request_id: str
    external_id: str
    partner_id: str
    exchanges: list[dict]


async def pay(base_url: str, creds: Credentials, payment_code: str) -> Receipt:
    """Inquire, then pay the amount the inquiry named, as a bank teller's
    system does. Raises VirtualBankError with the adapter's answer."""
    exchanges: list[dict] = []
    async with SnapClient(base_url, creds, timeout_s=PAYMENT_TIMEOUT_S) as bank:
        try:
            await bank.token()
        except SnapError as error:
            exchanges.append(_exchange("token", error.response))
            raise VirtualBankError("token", error.response) from None
        inquiry = await bank.inquiry(payment_code)
        exchanges.append(_exchange("inquiry", inquiry))
        if not inquiry.ok:
            raise VirtualBankError("inquiry", inquiry)
        va = inquiry.body.get("virtualAccountData", {})
        amount_rupiah = protocol.parse_rupiah(va["totalAmount"]["value"])
        payment = await bank.pay(payment_code, amount_rupiah, inquiry.request_id)
        exchanges.append(_exchange("payment", payment))
        if not payment.ok:
            raise VirtualBankError("payment", payment)
    return Receipt(
        payment_code=payment_code,
        amount_rupiah=amount_rupiah,
        response_code=payment.code,
        response_message=str(payment.body.get("responseMessage", "")),
        payment_request_id=payment.request_id,
        external_id=payment.external_id,
        partner_id=creds.partner_id,
        exchanges=exchanges,
    )


def _exchange(step: str, response: SnapResponse) -> dict:
    return {
        "step": step,
        "http_status": response.http_status,
        "response_code": response.code,
        "response_message": str(response.body.get("responseMessage", "")),
    }
