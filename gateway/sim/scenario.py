"""Scenario files: how a simulated go-live behaves, month by month.

A scenario is a TOML file (read with the standard library's `tomllib`). Every
key is optional; what is missing comes from `Scenario`'s defaults, which
describe the Bank Kalbar go-live of September 2025. Percentages are whole
percent or basis points, as their names say; money never appears here.

    name = "go-live"
    start_period = "2025-09"        # the first simulated month
    months = 3                      # --duration overrides it
    workers = 3000                  # --workers overrides it
    baseline_coverage_basis_points = 3163   # 31.63 % already protected at the start

    [behaviour]
    compliant_pay_percent = 90      # a payer who paid before pays this month's bill...
    late_percent = 8                # ...of those who pay, this share pays in the next month (a late fee follows)
    activation_percent = 6          # a payer who never paid starts paying this month

    [[banks]]
    name = "BANKKALBAR"
    protocol = "snap"               # or "iso8583"
    share_percent = 60

Unknown keys and out-of-range values are refused with the file, the key and
what would be accepted, before anything is written.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from gateway.domain import dues
from gateway.domain.money import DomainError
from gateway.domain.periods import Period

PROTOCOLS = ("snap", "iso8583")
WORKERS_MAX = 2_000_000


class ScenarioError(ValueError):
    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class Bank:
    """A virtual bank: who pays through it and over which protocol."""

    name: str
    protocol: str
    share_percent: int
    # ISO 8583 only: the acquirer institution code (field 32) and the TCP links it keeps open.
    acquirer: str = "123"
    links: int = 2


@dataclass(frozen=True)
class Behaviour:
    """What payers and banks do. Every share is a whole percent of the bills
    (or payments) it applies to, decided per bill by the run's seeded RNG."""

    compliant_pay_percent: int = 90
    late_percent: int = 8
    activation_percent: int = 6
    # Of the payments made before the deadline, the share made in the last
    # `rush_days` days before the 15th (the rush).
    rush_percent: int = 60
    rush_days: int = 5
    inquiry_percent: int = 70  # banks that ask for the bill before paying it
    duplicate_percent: int = 2  # the same payment message sent twice (a bank retry)
    advice_percent: int = 2  # a payment whose answer "was lost": the bank follows with an advice
    reversal_percent: int = 1  # ISO 8583 payments the bank reverses (0400); half are paid again later
    wage_change_percent: int = 3  # employers reporting a changed wage for some workers


@dataclass(frozen=True)
class Load:
    concurrency: int = 16  # requests in flight from all banks together
    rate_per_second: int = 0  # payments started per second, 0 = as fast as the gateway answers
    report_concurrency: int = 4  # wage reports submitted at once


@dataclass(frozen=True)
class Scenario:
    name: str = "go-live"
    description: str = "Bank Kalbar go-live, September 2025: the default population and behaviour"
    start_period: str = "2025-09"
    months: int = 3
    workers: int = 3000
    baseline_coverage_basis_points: int = 3163
    behaviour: Behaviour = field(default_factory=Behaviour)
    load: Load = field(default_factory=Load)
    banks: tuple[Bank, ...] = (
        Bank("BANKKALBAR", "snap", 45),
        Bank("KALBAR-H2H", "iso8583", 40, acquirer="123", links=2),
        Bank("BANKBNI", "snap", 15),
    )

    @property
    def first_period(self) -> Period:
        return Period.parse(self.start_period)

    def with_overrides(self, **values: Any) -> Scenario:
        """Command-line options over the file; None means "keep the file's"."""
        top = {k: v for k, v in values.items() if k in ("workers", "months") and v is not None}
        load = {k: v for k, v in values.items() if k in ("rate_per_second", "concurrency") and v is not None}
        scenario = dataclasses.replace(self, **top)
        if load:
            scenario = dataclasses.replace(scenario, load=dataclasses.replace(scenario.load, **load))
        validate(scenario, "command line")
        return scenario


_RANGES: dict[str, tuple[int, int]] = {
    "months": (1, 36),
    "workers": (1, WORKERS_MAX),
    "baseline_coverage_basis_points": (0, 10_000),
    "rush_days": (1, 14),
    "concurrency": (1, 512),
    "rate_per_second": (0, 100_000),
    "report_concurrency": (1, 32),
    "links": (1, 16),
}


def _check_int(source: str, key: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ScenarioError(source, key, f"must be a whole number from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise ScenarioError(source, key, f"must be from {low} to {high}, got {value}")


def validate(scenario: Scenario, source: str) -> None:
    for key in ("name", "description"):
        if not isinstance(getattr(scenario, key), str):
            raise ScenarioError(source, key, f"must be a string, got {getattr(scenario, key)!r}")
    for key in ("months", "workers", "baseline_coverage_basis_points"):
        _check_int(source, key, getattr(scenario, key), *_RANGES[key])
    try:
        first = Period.parse(scenario.start_period)
    except (DomainError, TypeError) as error:
        raise ScenarioError(source, "start_period", f"must be YYYY-MM, e.g. 2025-09 ({error})") from None
    _check_periods(source, first, scenario.months)
    for f in dataclasses.fields(Behaviour):
        low, high = _RANGES.get(f.name, (0, 100))
        _check_int(source, f"behaviour.{f.name}", getattr(scenario.behaviour, f.name), low, high)
    for f in dataclasses.fields(Load):
        _check_int(source, f"load.{f.name}", getattr(scenario.load, f.name), *_RANGES[f.name])
    if not scenario.banks:
        raise ScenarioError(source, "banks", "at least one bank is needed")
    names = set()
    for n, bank in enumerate(scenario.banks):
        where = f"banks[{n}]"
        if not isinstance(bank.name, str) or not bank.name.replace("-", "").replace("_", "").isalnum() or len(bank.name) > 30:
            raise ScenarioError(source, f"{where}.name", "must be 1 to 30 letters, digits, '-' or '_'")
        # A SNAP bank's client key is made from its name in lower case, so names
        # that differ only in case would be the same partner.
        if bank.name.lower() in names:
            raise ScenarioError(source, f"{where}.name", f"{bank.name!r} appears twice (names are compared ignoring case)")
        names.add(bank.name.lower())
        if bank.protocol not in PROTOCOLS:
            raise ScenarioError(source, f"{where}.protocol", f"must be one of {', '.join(PROTOCOLS)}, got {bank.protocol!r}")
        _check_int(source, f"{where}.share_percent", bank.share_percent, 0, 100)
        _check_int(source, f"{where}.links", bank.links, *_RANGES["links"])
        if not (isinstance(bank.acquirer, str) and bank.acquirer.isdigit() and 1 <= len(bank.acquirer) <= 11):
            raise ScenarioError(source, f"{where}.acquirer", "must be 1 to 11 digits (ISO 8583 field 32)")
    total = sum(b.share_percent for b in scenario.banks)
    if total != 100:
        raise ScenarioError(source, "banks", f"share_percent must add up to 100, got {total}")


def _check_periods(source: str, first: Period, months: int) -> None:
    """Every month the run touches must be billable: the first wage reports
    are for the month before `start_period` (PU), and the last month's late
    payers are drawn for the month after the run."""
    try:
        dues.rate_schedule_for(first - 1)
    except DomainError:
        earliest = dues.RATE_SCHEDULES[0].first_period + 1
        raise ScenarioError(
            source, "start_period",
            f"must be {earliest} or later (its first wage reports are for the month before, and the rate tables "
            f"start at {dues.RATE_SCHEDULES[0].first_period}), got {first}",
        ) from None
    try:
        first + months
    except DomainError as error:
        raise ScenarioError(source, "start_period", f"{first} plus {months} month(s) runs past the last period ({error})") from None


def _build(cls: type, data: Any, source: str, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ScenarioError(source, prefix.rstrip(".") or "file", "must be a table")
    fields = dataclasses.fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(source, prefix + unknown[0], f"unknown key; accepted: {', '.join(sorted(known))}")
    required = [
        f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ScenarioError(source, prefix + missing[0], f"is required (each table needs {', '.join(required)})")
    return cls(**data)


def parse(data: dict[str, Any], source: str) -> Scenario:
    values = dict(data)
    nested: dict[str, Any] = {}
    if "behaviour" in values:
        nested["behaviour"] = _build(Behaviour, values.pop("behaviour"), source, "behaviour.")
    if "load" in values:
        nested["load"] = _build(Load, values.pop("load"), source, "load.")
    if "banks" in values:
        banks = values.pop("banks")
        if not isinstance(banks, list):
            raise ScenarioError(source, "banks", "must be an array of tables ([[banks]])")
        nested["banks"] = tuple(_build(Bank, b, source, f"banks[{n}].") for n, b in enumerate(banks))
    scenario = _build(Scenario, values, source, "")
    scenario = dataclasses.replace(scenario, **nested)
    validate(scenario, source)
    return scenario


def load(path: Path | str | None) -> Scenario:
    """A scenario file by path, a shipped scenario by name ("go-live"), or the default."""
    if path is None:
        return load("go-live")
    text_path = str(path)
    shipped = resources.files("gateway.sim") / "scenarios" / f"{text_path}.toml"
    if "/" not in text_path and not text_path.endswith(".toml") and shipped.is_file():
        source, text = f"{text_path} (shipped)", shipped.read_text(encoding="utf-8")
    else:
        file = Path(path)
        if not file.is_file():
            raise ScenarioError(str(path), "file", f"not found; shipped scenarios: {', '.join(shipped_names())}")
        try:
            source, text = str(file), file.read_text(encoding="utf-8")
        except UnicodeDecodeError as error:
            raise ScenarioError(str(file), "file", f"is not UTF-8 text (TOML files are UTF-8): {error}") from None
        except OSError as error:
            raise ScenarioError(str(file), "file", f"cannot be read: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScenarioError(source, "file", f"is not valid TOML: {error}") from None
    return parse(data, source)


def shipped_names() -> list[str]:
    folder = resources.files("gateway.sim") / "scenarios"
    return sorted(e.name.removesuffix(".toml") for e in folder.iterdir() if e.name.endswith(".toml"))
