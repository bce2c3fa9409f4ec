"""SNAP BI virtual-account adapter (services 73, 24, 25, 26), mounted at /snap.

`adapter_factory()` is the entry point (`kanal.bank_adapters` group). See
docs/snap.md for the endpoints, the rules and the choices made where the
standard leaves room.
"""

from __future__ import annotations

from bank_adapters.snap.adapter import SnapAdapter

__all__ = ["SnapAdapter", "adapter_factory"]


def adapter_factory() -> SnapAdapter:
    return SnapAdapter()
