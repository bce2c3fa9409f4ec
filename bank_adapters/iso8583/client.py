"""A virtual bank: the acquirer side of an ISO 8583 host-to-host link.

Used by the tests, the simulator and the benchmarks. One client holds one TCP
link, logs on when the profile asks for it, sends many requests at once and
matches each response by MTI and STAN. A lost link fails the requests in
flight (the caller decides: advice or reversal, as a bank would) and the next
request reconnects, with a bounded number of attempts and backoff.

    async with Iso8583Client("127.0.0.1", port) as bank:
        inquiry = await bank.inquiry("12345678901")
        payment = await bank.pay("12345678901", int(inquiry.response["4"]))
        await bank.reverse(payment.request)
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from . import bill_data, codec
from .handler import original_data, response_mti
from .profile import Profile, load_profile

log = structlog.get_logger("kanal.iso8583.client")


class LinkDown(ConnectionError):
    """The link closed or could not be opened."""


class ResponseTimeout(TimeoutError):
    """No response with this MTI and STAN arrived in time."""


@dataclass(frozen=True, slots=True)
class Reply:
    request: dict[str, str]
    response: dict[str, str]

    @property
    def code(self) -> str:
        return self.response.get("39", "")

    @property
    def approved(self) -> bool:
        return self.code == "00"

    def bill(self, profile: Profile) -> dict[str, Any]:
        return bill_data.parse(profile.bill_data_layout, self.response.get("48", ""))


def transmission_time(now: dt.datetime | None = None) -> str:
    return (now or dt.datetime.now(dt.UTC)).strftime("%m%d%H%M%S")


def new_rrn() -> str:
    return f"{secrets.randbelow(10**12):012d}"


class Iso8583Client:
    def __init__(
        self,
        host: str,
        port: int,
        profile: Profile | str = "bank_kalbar",
        acquirer: str = "123",
        channel_code: str = "6017",
        timeout_ms: int = 10_000,
        reconnect_attempts_max: int = 5,
        reconnect_backoff_ms: int = 100,
        logon: bool | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.acquirer = acquirer
        self.channel_code = channel_code
        self.timeout_ms = timeout_ms
        self.reconnect_attempts_max = reconnect_attempts_max
        self.reconnect_backoff_ms = reconnect_backoff_ms
        self.logon_on_connect = self.profile.logon_required if logon is None else logon
        self._stans = itertools.count(secrets.randbelow(900_000) + 1)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self._pending: dict[tuple[str, str], asyncio.Future] = {}
        self._connect_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self.connects = 0

    async def __aenter__(self) -> Iso8583Client:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._writer is not None and not self._writer.is_closing()

    # --- link ---------------------------------------------------------------

    async def connect(self) -> None:
        async with self._connect_lock:
            if self.connected:
                return
            # Requests still waiting on a lost link will get no answer from a new one.
            self._fail_pending(LinkDown("link lost before the answer came"))
            error: Exception | None = None
            for attempt in range(self.reconnect_attempts_max):
                try:
                    async with asyncio.timeout(self.timeout_ms / 1000):
                        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
                    break
                except (OSError, TimeoutError) as exc:
                    error = exc
                    await asyncio.sleep(self.reconnect_backoff_ms * (2**attempt) / 1000)
            else:
                raise LinkDown(f"cannot reach {self.host}:{self.port}: {error!r}")
            self.connects += 1
            self._reader_task = asyncio.create_task(self._read_loop(self._reader, self._writer))
        if self.logon_on_connect:
            reply = await self.logon()
            if not reply.approved:
                raise LinkDown(f"logon refused with {reply.code}")

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None
        self._fail_pending(LinkDown("client closed"))

    async def _read_loop(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                frame = await codec.read_frame(reader, codec.FRAME_BYTES_LIMIT)
                try:
                    doc = codec.decode(frame.body, self.profile)
                except codec.MessageError as error:
                    log.warning("iso8583.client.bad_response", reason=error.reason)
                    continue
                future = self._pending.pop((doc["t"], doc.get("11", "")), None)
                if future is None or future.done():
                    log.warning("iso8583.client.unmatched", mti=doc["t"], stan=doc.get("11"))
                    continue
                future.set_result(doc)
        except (codec.FrameClosed, ConnectionError):
            pass
        finally:
            writer.close()
            if self._writer is writer:  # not a newer link opened since
                self._writer = None
                self._fail_pending(LinkDown("link closed by the server"))

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)

    # --- raw ------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (no framing): for fuzzing and broken-peer tests."""
        if not self.connected:
            await self.connect()
        assert self._writer is not None
        async with self._write_lock:
            self._writer.write(data)
            await self._writer.drain()

    async def request(self, doc: Mapping[str, str], timeout_ms: int | None = None) -> Reply:
        """Send one request and wait for the response with the matching MTI and STAN."""
        if not self.connected:
            await self.connect()
        request = dict(doc)
        request.setdefault("11", self.next_stan())
        reply_mti = response_mti(request["t"])
        if reply_mti is None:
            raise ValueError(f"MTI {request['t']!r} is not a request: expected 0200, 0220, 0400, 0420, 0800 ...")
        key = (reply_mti, request["11"])
        if key in self._pending:
            raise ValueError(f"STAN {request['11']} already awaits a {reply_mti}: use another STAN")
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            body = codec.encode(request, self.profile)
            assert self._writer is not None
            async with self._write_lock:
                self._writer.write(codec.frame(body))
                await self._writer.drain()
            # Not asyncio.wait_for: on Python 3.11 it returns the answer and drops a
            # cancellation that comes in the same turn of the loop as the answer.
            async with asyncio.timeout((timeout_ms or self.timeout_ms) / 1000):
                response = await future
        except TimeoutError:
            raise ResponseTimeout(
                f"no {reply_mti} for STAN {request['11']} within {timeout_ms or self.timeout_ms} ms"
            ) from None
        except (ConnectionError, AttributeError) as error:
            raise LinkDown(str(error)) from None
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]
        return Reply(request, response)

    def next_stan(self) -> str:
        return f"{next(self._stans) % 1_000_000:06d}"

    # --- network management ---------------------------------------------------

    async def network(self, code: str, timeout_ms: int | None = None) -> Reply:
        return await self.request({"t": "0800", "7": transmission_time(), "70": code, "32": self.acquirer}, timeout_ms)

    async def logon(self) -> Reply:
        return await self.network("001")

    async def logoff(self) -> Reply:
        return await self.network("002")

    async def cutover(self) -> Reply:
        return await self.network("201")

    async def echo(self, timeout_ms: int | None = None) -> Reply:
        return await self.network("301", timeout_ms)

    # --- bill payment -----------------------------------------------------------

    def financial(self, mti: str, kind: str, payment_code: str, amount_rupiah: int, **fields: str) -> dict[str, str]:
        now = dt.datetime.now(dt.UTC)
        local = self.profile.local_now(now)
        doc = {
            "t": mti,
            "2": payment_code,
            "3": self.profile.processing_codes[kind].ljust(6, "0"),
            "4": str(amount_rupiah * 10**self.profile.amount_minor_digits),
            "7": transmission_time(now),
            "11": self.next_stan(),
            "12": local.strftime("%H%M%S"),
            "13": local.strftime("%m%d"),
            "18": self.channel_code,
            "32": self.acquirer,
            "37": new_rrn(),
            "49": self.profile.currency,
        }
        doc.update(fields)
        return doc

    async def inquiry(self, payment_code: str, **fields: str) -> Reply:
        return await self.request(self.financial("0200", "inquiry", payment_code, 0, **fields))

    async def pay(self, payment_code: str, amount_rupiah: int, **fields: str) -> Reply:
        return await self.request(self.financial("0200", "payment", payment_code, amount_rupiah, **fields))

    async def pay_bill(self, payment_code: str) -> Reply:
        """Inquiry, then payment of the amount the inquiry names (what a teller does)."""
        inquiry = await self.inquiry(payment_code)
        if not inquiry.approved:
            return inquiry
        amount_rupiah = int(inquiry.response["4"]) // 10**self.profile.amount_minor_digits
        return await self.pay(payment_code, amount_rupiah)

    async def advice(self, original: Mapping[str, str], repeat: bool = False) -> Reply:
        """0220 (0221 when repeated) for a payment whose response never came."""
        doc = dict(original)
        doc.update({"t": "0221" if repeat else "0220", "90": self._original_data(original)})
        return await self.request(doc)

    async def reverse(self, original: Mapping[str, str], advice: bool = False, repeat: bool = False) -> Reply:
        """0400 (0420 as an advice; 0401/0421 repeated) undoing `original`."""
        mti = ("0420" if advice else "0400") if not repeat else ("0421" if advice else "0401")
        doc = dict(original)
        doc.update({"t": mti, "7": transmission_time(), "11": self.next_stan(), "90": self._original_data(original)})
        return await self.request(doc)

    async def status(self, original: Mapping[str, str]) -> Reply:
        doc = self.financial(
            "0200", "status", original["2"], int(original["4"]) // 10**self.profile.amount_minor_digits
        )
        doc.update({"37": original["37"], "90": self._original_data(original)})
        return await self.request(doc)

    @staticmethod
    def _original_data(original: Mapping[str, str]) -> str:
        return original_data(
            original["t"], original["11"], original["7"], original.get("32", ""), original.get("33", "")
        )
