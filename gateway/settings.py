"""Configuration: environment variables with the KANAL_ prefix, plus DATABASE_URL.

Every limit carries its unit in its name. Defaults make `kanal demo` work on a
bare machine; `kanal serve` turns the sandbox off unless asked.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
import tempfile
from pathlib import Path
from typing import Annotated, Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

try:
    import fcntl
except ImportError:  # Windows: no flock; processes starting together may each write a token
    fcntl = None  # type: ignore[assignment]


def default_data_dir() -> Path:
    return platformdirs.user_data_path("kanal")


ADMIN_TOKEN_FILE = "admin-token"


def new_admin_token() -> str:
    return "adm_" + secrets.token_urlsafe(24)


def admin_token_from_file(path: Path) -> str:
    """The admin token kept in `path`, readable by this user only (0600):
    the one already there, or a new one written there.

    Nothing planted in the folder is trusted or written through. The file is
    opened without following a symbolic link and judged on what was opened
    (a regular file of this user's that no one else may read, else a new
    token replaces it). A new token is written to a fresh temporary file
    (created exclusively, 0600 from the start) and renamed over `path`, which
    replaces a link there rather than writing to its target. Processes
    starting together take turns on a lock file beside it, so they all end
    with the one token in the file."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT | _NOFOLLOW, 0o600)
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when `lock` is closed
        token = _trusted_token(path)
        if token is not None:
            return token
        token = new_admin_token()
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            os.write(fd, (token + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
        return token
    finally:
        os.close(lock)


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _trusted_token(path: Path) -> str | None:
    """The token in `path` if it is a regular file of this user's that no
    one else may read or write (judged on the opened file, not the name)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:  # a symbolic link: not this user's file
            return None
        raise
    try:
        opened = os.fstat(fd)
        if not stat.S_ISREG(opened.st_mode) or opened.st_uid != os.getuid() or opened.st_mode & 0o077:
            return None
        return os.read(fd, 4096).decode("utf-8", errors="replace").strip() or None
    finally:
        os.close(fd)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KANAL_", env_nested_delimiter="__", extra="ignore")

    # With no DATABASE_URL, Kanal starts an embedded PostgreSQL in data_dir.
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "KANAL_DATABASE_URL")
    )
    data_dir: Path = Field(default_factory=default_data_dir)

    host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    iso8583_port: int = Field(default=8583, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="gateway processes sharing the ports (SO_REUSEPORT)")
    # Bind with SO_REUSEPORT so several gateway processes share one port.
    reuse_port: bool = False

    # Guards the ops and partner-administration routes. Generated at start when empty.
    admin_token: SecretStr = SecretStr("")
    sandbox: bool = False

    pool_size_min: int = Field(default=2, ge=1)
    pool_size_max: int = Field(default=16, ge=1)
    statement_timeout_ms: int = Field(default=10_000, ge=100)
    request_body_bytes_max: int = Field(default=1_048_576, ge=1024)
    csv_body_bytes_max: int = Field(default=32 * 1_048_576, ge=1024)
    participants_per_request_max: int = Field(default=100_000, ge=1)

    # Group commit: payments arriving together share one statement and commit.
    posting_batch_size_max: int = Field(default=64, ge=1, le=10_000)
    posting_batch_wait_ms: int = Field(default=1, ge=0, le=1000)
    posting_batches_in_flight_max: int = Field(default=2, ge=1, le=64)

    # Coverage counters: payments append deltas; the gateway folds them into
    # per-bucket totals every interval, so that reading the coverage stays cheap.
    coverage_fold_interval_ms: int = Field(default=1000, ge=10, le=3_600_000)
    coverage_fold_rows_max: int = Field(default=50_000, ge=1, le=10_000_000)

    # How long an unpaid bill's payment code stays payable after its due date
    # (after the day it is issued, for a bill issued after its due date).
    bill_expiry_days_after_due: int = Field(default=90, ge=0)
    # Province workforce used as the coverage denominator (Sakernas 2025).
    province_workforce: int = Field(default=1_819_430, ge=1)
    # Kanal's own settlement accounts, comma-separated (a camt statement's
    # Acct/Id, a CSV's --account). When set, a statement for any other account
    # is refused naming `account`; a CSV statement that names no account is
    # still taken. Empty: every account is taken.
    settlement_accounts: Annotated[tuple[str, ...], NoDecode] = ()

    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # Per-adapter settings: KANAL_ADAPTERS__ISO8583__PORT=9583 -> {"iso8583": {"port": "9583"}}
    adapters: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("settlement_accounts", mode="before")
    @classmethod
    def _split_accounts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _pool_bounds(self) -> Settings:
        if self.pool_size_min > self.pool_size_max:
            raise ValueError(
                f"KANAL_POOL_SIZE_MIN={self.pool_size_min} is larger than KANAL_POOL_SIZE_MAX={self.pool_size_max}; "
                "the pool's minimum must not exceed its maximum"
            )
        return self

    @property
    def admin_token_file(self) -> Path:
        """Where `kanal serve` keeps the admin token it made when none was set."""
        return self.data_dir / ADMIN_TOKEN_FILE

    def ensure_admin_token(self) -> str:
        """Return the admin token, generating one for this process when unset."""
        if not self.admin_token.get_secret_value():
            self.admin_token = SecretStr(new_admin_token())
        return self.admin_token.get_secret_value()
