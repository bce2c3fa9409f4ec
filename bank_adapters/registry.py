"""Finds bank adapters: the built-in ones and third-party ones, all through the
same entry-point group (`kanal.bank_adapters`), so a plugin is a peer of the
built-ins. See docs/adapters.md."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

import structlog

from bank_adapters.base import ENTRY_POINT_GROUP, BankAdapter

log = structlog.get_logger("kanal.adapters")

# Used when Kanal runs from a source tree that was never installed (no
# entry-point metadata); an installed Kanal finds these through the group.
BUILTIN = {
    "snap": "bank_adapters.snap:adapter_factory",
    "iso8583": "bank_adapters.iso8583:adapter_factory",
}


def _load(target: str) -> Callable[[], BankAdapter]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def discover() -> dict[str, Callable[[], BankAdapter]]:
    factories: dict[str, Callable[[], BankAdapter]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            factories[ep.name] = ep.load()
        except Exception as error:  # a broken plugin must not stop the gateway
            log.error("adapter_load_failed", adapter=ep.name, error=repr(error))
    for name, target in BUILTIN.items():
        if name not in factories:
            try:
                factories[name] = _load(target)
            except (ImportError, AttributeError) as error:
                log.error("adapter_load_failed", adapter=name, error=repr(error))
    return factories


def load_adapters(enabled: list[str] | None = None) -> list[BankAdapter]:
    factories = discover()
    names = sorted(factories) if enabled is None else enabled
    adapters = []
    for name in names:
        if name not in factories:
            raise LookupError(f"no bank adapter named {name!r}; found: {', '.join(sorted(factories)) or 'none'}")
        adapters.append(factories[name]())
    return adapters
