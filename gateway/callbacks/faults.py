"""Outbound fault profiles: what an integrator orders to test its receiver.

A profile is set on an endpoint, or on a partner (then it applies to every
endpoint the partner owns that has none of its own). It is applied when a
delivery is created; a replay sends without faults.

    delay_ms              every delivery waits this long before its first attempt
    duplicate_percent     share of deliveries sent twice (same webhook-id, same body)
    out_of_order_percent  share of consecutive pairs sent in reverse order: the first
                          of the pair is held back out_of_order_hold_ms
    drop_percent          share of deliveries never sent (status "dropped") until replayed
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

DELAY = "delayed"
DUPLICATE = "duplicated"
OUT_OF_ORDER = "out_of_order"
DROP = "dropped"


class OutboundFaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    delay_ms: int = Field(default=0, ge=0, le=3_600_000)
    duplicate_percent: int = Field(default=0, ge=0, le=100)
    out_of_order_percent: int = Field(default=0, ge=0, le=100)
    out_of_order_hold_ms: int = Field(default=2_000, ge=1, le=600_000)
    drop_percent: int = Field(default=0, ge=0, le=100)

    def is_empty(self) -> bool:
        return self == OutboundFaults()


def _hit(percent: int, rng: random.Random) -> bool:
    return percent >= 100 or (percent > 0 and rng.randrange(100) < percent)


def choose(profile: OutboundFaults, sequence: int, rng: random.Random | None = None) -> tuple[list[str], int]:
    """The faults for the delivery numbered `sequence` (1, 2, 3... per
    endpoint), and how long to hold it before its first attempt (ms)."""
    rng = rng or random.Random()
    if _hit(profile.drop_percent, rng):
        return [DROP], 0
    chosen: list[str] = []
    hold_ms = 0
    if profile.delay_ms:
        chosen.append(DELAY)
        hold_ms += profile.delay_ms
    # Pairs are (1, 2), (3, 4)...: holding back the odd one lets the even one overtake it.
    if sequence % 2 == 1 and _hit(profile.out_of_order_percent, rng):
        chosen.append(OUT_OF_ORDER)
        hold_ms += profile.out_of_order_hold_ms
    if _hit(profile.duplicate_percent, rng):
        chosen.append(DUPLICATE)
    return chosen, hold_ms
