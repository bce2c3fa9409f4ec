"""Callback settings: environment variables with the prefix KANAL_CALLBACKS_
(KANAL_CALLBACKS_WORKERS=4; the double-underscore spelling
KANAL_CALLBACKS__WORKERS is accepted too). Every limit carries its unit."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Svix's schedule, which the Standard Webhooks authors run: after the first
# attempt, retry after 5 s, 5 min, 30 min, 2 h, 5 h, 10 h and 10 h.
DEFAULT_RETRY_SCHEDULE_MS = (5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000)


class CallbackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KANAL_CALLBACKS_", extra="ignore")

    # Delivery workers inside each gateway process (0: none; run `kanal deliver` instead).
    workers: int = Field(default=2, ge=0, le=64)
    # Run the outbox relay (fan-out into deliveries) in this process.
    relay: bool = True
    # One HTTP request to a receiver, connect to last byte.
    timeout_ms: int = Field(default=5_000, ge=50, le=60_000)
    # Waits between attempts; len + 1 attempts in a round. Comma-separated in the environment.
    retry_schedule_ms: Annotated[tuple[int, ...], NoDecode] = Field(default=DEFAULT_RETRY_SCHEDULE_MS, min_length=1, max_length=20)
    # Each wait is spread uniformly over +/- this share, so failing receivers are not hit in lockstep.
    jitter_percent: int = Field(default=20, ge=0, le=100)
    # A 429's Retry-After is honoured up to this.
    retry_after_ms_max: int = Field(default=3_600_000, ge=0)
    # A delivery whose attempt could not be recorded (the attempt rolled back:
    # a database error, a bug) waits this long before it is claimed again, so
    # that one delivery cannot hold a worker in a loop of sends.
    unrecorded_attempt_hold_ms: int = Field(default=60_000, ge=10, le=3_600_000)
    # How often an idle worker and the relay look for work.
    poll_interval_ms: int = Field(default=200, ge=10, le=60_000)
    relay_batch_size_max: int = Field(default=500, ge=1, le=10_000)
    # Outbox rows younger than this may still be overtaken by a lower id; see 0003_callbacks.sql.
    relay_horizon_s: int = Field(default=60, ge=1, le=3600)
    response_excerpt_chars_max: int = Field(default=512, ge=0, le=1024)
    request_body_bytes_max: int = Field(default=65_536, ge=1024)
    # How long the previous secret keeps signing after a rotation.
    rotation_overlap_s: int = Field(default=86_400, ge=0, le=30 * 86_400)
    endpoints_per_owner_max: int = Field(default=20, ge=1, le=1000)
    # The delivery and attempt counts (dashboard, /metrics) are counters: each
    # gateway folds their deltas into totals this often, this many at a time
    # (migration 0022).
    counts_fold_interval_ms: int = Field(default=1_000, ge=10, le=3_600_000)
    counts_fold_rows_max: int = Field(default=50_000, ge=1, le=10_000_000)

    @field_validator("retry_schedule_ms", mode="before")
    @classmethod
    def _comma_separated(cls, value):
        if isinstance(value, str):
            parts = [part.strip() for part in value.split(",") if part.strip()]
            try:
                return tuple(int(part) for part in parts)
            except ValueError:
                raise ValueError(f"must be comma-separated whole milliseconds, e.g. 5000,300000; got {value!r}") from None
        return value

    @field_validator("retry_schedule_ms")
    @classmethod
    def _non_negative(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(wait < 0 for wait in value):
            raise ValueError("waits must be >= 0 ms")
        return value

    @property
    def attempts_max(self) -> int:
        return len(self.retry_schedule_ms) + 1

    @classmethod
    def from_env(cls, **overrides) -> CallbackSettings:
        """Read the environment, accepting KANAL_CALLBACKS__X as KANAL_CALLBACKS_X."""
        doubled = {
            key[len("KANAL_CALLBACKS__") :].lower(): value
            for key, value in os.environ.items()
            if key.upper().startswith("KANAL_CALLBACKS__")
        }
        values = {**doubled, **overrides}
        return cls(**values) if values else cls()
