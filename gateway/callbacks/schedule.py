"""When to try again: the documented schedule with jitter, and what each
receiver answer means."""

from __future__ import annotations

import random
from enum import StrEnum


class Verdict(StrEnum):
    DELIVERED = "delivered"  # any 2xx
    GONE = "gone"  # 410: stop, and disable the endpoint
    RETRY = "retry"  # timeout, connection error, 5xx, 429, any other status


def classify(http_status: int | None) -> Verdict:
    if http_status is not None and 200 <= http_status < 300:
        return Verdict.DELIVERED
    if http_status == 410:
        return Verdict.GONE
    return Verdict.RETRY


def next_wait_ms(
    schedule_ms: tuple[int, ...],
    attempts_done: int,
    *,
    jitter_percent: int,
    retry_after_ms: int | None = None,
    rng: random.Random | None = None,
) -> int | None:
    """The wait before the next attempt after `attempts_done` attempts in this
    round, or None when the schedule is exhausted. A receiver's Retry-After
    (already capped by the caller) is honoured when it asks for longer."""
    if attempts_done < 1:
        raise ValueError("at least one attempt was made before a retry")
    index = attempts_done - 1
    if index >= len(schedule_ms):
        return None
    base_ms = schedule_ms[index]
    spread = base_ms * jitter_percent // 100
    wait_ms = base_ms + (rng or random).randint(-spread, spread) if spread else base_ms
    if retry_after_ms is not None:
        wait_ms = max(wait_ms, retry_after_ms)
    return max(0, wait_ms)


def parse_retry_after_ms(value: str | None, cap_ms: int) -> int | None:
    """Retry-After in seconds (the HTTP-date form is ignored), capped. ASCII
    digits only: isdigit() alone admits "²", which int() refuses, and that
    ValueError rolled the attempt back and had it sent again at once. Leading
    zeros dropped and a number of more than 18 digits taken as the cap:
    int() refuses more than 4,300 digits (sys.get_int_max_str_digits) with a
    ValueError, and a response header may hold 8 KB of them."""
    text = (value or "").strip()
    if not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 18:
        return cap_ms
    return min(int(digits) * 1000, cap_ms)
