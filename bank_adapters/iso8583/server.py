"""The TCP side: one asyncio server, many links, many messages per link.

Each link reads frames in order and handles each message in its own task, so
a slow payment never holds up an echo test behind it; responses go out as
they are ready, matched by the bank through STAN and RRN. Every wait is
bounded: the idle timeout closes a silent link, the per-message deadline
answers 68, a per-link cap on messages in flight stops reading (backpressure)
instead of queueing without end, and a write timeout drops a bank that does
not read its answers. Anything a link does wrong ends at most that link.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from bank_adapters.base import AdapterSettingsError

from . import codec
from .handler import NOTE, OUTCOME, Handler, LinkState, Note, message_kind, response_mti
from .profile import Profile

log = structlog.get_logger("kanal.iso8583")

_link_ids = itertools.count(1)


class SettingsError(AdapterSettingsError):
    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message, key=key, adapter="iso8583")


def whole_setting(name: str, raw: Any, low: int, high: int) -> int:
    """An adapter setting that must be a whole number in [low, high]; the error names it and the range."""
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise SettingsError(f"iso8583 setting {name}={raw!r}: expected a whole number from {low} to {high}", key=name) from None
    if not low <= value <= high:
        raise SettingsError(f"iso8583 setting {name}={value}: expected {low} to {high}", key=name)
    return value


@dataclass(frozen=True, slots=True)
class ServerLimits:
    frame_bytes_max: int = 4096
    idle_timeout_ms: int = 300_000
    connections_max: int = 256
    message_deadline_ms: int = 15_000
    link_messages_in_flight_max: int = 64
    write_timeout_ms: int = 10_000
    # How long stop() lets payments already under way finish before cancelling them.
    drain_timeout_ms: int = 10_000

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ServerLimits:
        bounds = {
            "frame_bytes_max": (64, codec.FRAME_BYTES_LIMIT),
            "idle_timeout_ms": (100, 86_400_000),
            "connections_max": (1, 100_000),
            "message_deadline_ms": (1, 600_000),
            "link_messages_in_flight_max": (1, 10_000),
            "write_timeout_ms": (100, 600_000),
            "drain_timeout_ms": (0, 600_000),
        }
        values = {name: whole_setting(name, settings[name], low, high) for name, (low, high) in bounds.items() if name in settings}
        return cls(**values)


# An unreadable frame is kept as hex, up to this many bytes.
EXCHANGE_RAW_BYTES_MAX = 2048


@dataclass(frozen=True, slots=True)
class Exchange:
    """One message and its answer (None: the bank heard nothing), for the log."""

    note: Note
    link_id: str
    request: dict[str, str]
    response: dict[str, str] | None
    duration_ms: float


class Iso8583Server:
    def __init__(
        self, profile: Profile, handler: Handler, limits: ServerLimits, host: str, port: int, reuse_port: bool = False
    ) -> None:
        self.profile = profile
        self.handler = handler
        self.limits = limits
        self.host = host
        self.requested_port = port
        self.reuse_port = reuse_port
        self.port: int | None = None
        # Told every answered response code (metrics); set by the adapter.
        self.observe_response: Callable[[str, str], None] = lambda _adapter, _code: None
        # Keeps every exchange for the conformance report; set by the adapter.
        self.record_exchange: Callable[[Exchange], Awaitable[None]] | None = None
        self._server: asyncio.Server | None = None
        self._links: dict[Link, asyncio.Task] = {}

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve_link, self.host, self.requested_port, reuse_port=self.reuse_port or None
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("iso8583.listening", host=self.host, port=self.port, profile=self.profile.name)

    @property
    def link_count(self) -> int:
        return len(self._links)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link, task in list(self._links.items()):
            link.abort()
            task.cancel()
        if self._links:
            await asyncio.wait(list(self._links.values()), timeout=5)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None
        pending = list(self.handler.background)
        if pending:
            # Let money moves already under way commit or roll back on their own.
            _done, still = await asyncio.wait(pending, timeout=self.limits.drain_timeout_ms / 1000)
            for task in still:
                task.cancel()
        log.info("iso8583.stopped", port=self.port)

    async def _serve_link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if len(self._links) >= self.limits.connections_max:
            log.warning("iso8583.link_refused", peer=str(peer), connections_max=self.limits.connections_max)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        link = Link(self, reader, writer, f"L{next(_link_ids)}", str(peer))
        task = asyncio.current_task()
        assert task is not None
        self._links[link] = task
        try:
            await link.run()
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - a link must never take the server down
            log.exception("iso8583.link_failed", link=link.state.link_id)
        finally:
            self._links.pop(link, None)
            link.abort()


class Link:
    def __init__(
        self, server: Iso8583Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link_id: str, peer: str
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.state = LinkState(link_id)
        self.limits = server.limits
        self.profile = server.profile
        self._slots = asyncio.Semaphore(self.limits.link_messages_in_flight_max)
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._closing = False

    async def run(self) -> None:
        log.info("iso8583.link_open", link=self.state.link_id, peer=self.peer)
        reason = "closed"
        try:
            while not self._closing:
                await self._slots.acquire()
                try:
                    async with asyncio.timeout(self.limits.idle_timeout_ms / 1000):
                        frame = await codec.read_frame(self.reader, self.limits.frame_bytes_max)
                except TimeoutError:
                    self._slots.release()
                    reason = "idle timeout"
                    break
                except (codec.FrameClosed, ConnectionError) as error:
                    self._slots.release()
                    reason = str(error) or type(error).__name__
                    break
                task = asyncio.create_task(self._process(frame))
                self._tasks.add(task)
                task.add_done_callback(self._done)
        finally:
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=self.limits.message_deadline_ms / 1000 + 1)
                for task in list(self._tasks):
                    task.cancel()
            self.abort()
            log.info("iso8583.link_closed", link=self.state.link_id, reason=reason)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("iso8583.message_failed", link=self.state.link_id, error=repr(task.exception()))
            self.abort()

    def abort(self) -> None:
        self._closing = True
        if not self.writer.is_closing():
            self.writer.close()

    async def _process(self, frame: codec.Frame) -> None:
        started = time.perf_counter()
        note = Note(partner_id=self.state.partner_id)
        NOTE.set(note)
        response = self._respond_to_broken(frame, note) if frame.oversized else None
        request: Mapping[str, str] = {}
        unanswerable = frame.oversized and response is None
        if not frame.oversized:
            try:
                request = codec.decode(frame.body, self.profile)
            except codec.MessageError as error:
                response = self._respond_to_error(error, len(frame.body), note)
                request = error.fields
                if error.mti:
                    note.kind = message_kind(self.profile, {**error.fields, "t": error.mti})
                unanswerable = response is None
            else:
                if response_mti(request["t"]) is None:
                    log.warning("iso8583.unexpected_mti_dropped", link=self.state.link_id, mti=request["t"])
                    return
                response = await self.server.handler.handle(request, self.state)
        if unanswerable:
            self.abort()
        elif response is not None:
            await self._send(response)
            self.server.observe_response("iso8583", response.get("39", ""))
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info(
            "iso8583.message",
            link=self.state.link_id,
            mti=request.get("t") or (response or {}).get("t", ""),
            stan=request.get("11", ""),
            rrn=request.get("37", ""),
            processing_code=request.get("3", ""),
            network_code=request.get("70", ""),
            acquirer=request.get("32", ""),
            response_code=(response or {}).get("39", ""),
            outcome=OUTCOME.get(),
            rule=note.rule,
            fault=note.fault,
            answered=response is not None,
            elapsed_ms=round(elapsed_ms, 2),
        )
        if self.server.record_exchange is not None:
            exchange = Exchange(
                note=note,
                link_id=self.state.link_id,
                request=dict(request) if request else {"frame_hex": frame.body[:EXCHANGE_RAW_BYTES_MAX].hex()},
                response=response,
                duration_ms=elapsed_ms,
            )
            try:
                await self.server.record_exchange(exchange)
            except Exception:  # noqa: BLE001 - the log must never cost the bank its link
                log.exception("iso8583.exchange_not_recorded", link=self.state.link_id)

    def _respond_to_broken(self, frame: codec.Frame, note: Note) -> dict[str, str] | None:
        mti = codec.readable_mti(frame.body)
        reply_mti = response_mti(mti) if mti else None
        note.rule = "frame-size"
        note.detail = f"the length header says more than frame_bytes_max={self.limits.frame_bytes_max} bytes"
        log.warning(
            "iso8583.frame_too_long", link=self.state.link_id, mti=mti, frame_bytes_max=self.limits.frame_bytes_max
        )
        if reply_mti is None:
            return None
        return self.server.handler.reply({}, reply_mti, "format_error")

    def _respond_to_error(self, error: codec.MessageError, size_bytes: int, note: Note) -> dict[str, str] | None:
        reply_mti = response_mti(error.mti) if error.mti else None
        note.rule, note.detail = "message-format", error.reason
        log.warning(
            "iso8583.malformed", link=self.state.link_id, mti=error.mti, reason=error.reason, size_bytes=size_bytes
        )
        if reply_mti is None:
            return None
        return self.server.handler.reply(error.fields, reply_mti, "format_error")

    async def _send(self, response: dict[str, str]) -> None:
        try:
            body = codec.encode(response, self.profile)
        except Exception as error:  # noqa: BLE001 - fall back to a bare 96
            log.error("iso8583.encode_failed", link=self.state.link_id, mti=response.get("t"), error=repr(error))
            bare = {k: response[k] for k in ("t", "11", "37") if k in response}
            bare["39"] = self.profile.code("malfunction")
            body = codec.encode(bare, self.profile)
        async with self._write_lock:
            if self.writer.is_closing():
                return
            self.writer.write(codec.frame(body))
            try:
                async with asyncio.timeout(self.limits.write_timeout_ms / 1000):
                    await self.writer.drain()
            except (TimeoutError, ConnectionError):
                log.warning("iso8583.write_failed", link=self.state.link_id)
                self.abort()
