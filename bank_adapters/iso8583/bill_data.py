"""DE48 biller data: the bill behind a payment code, in the profile's fixed-width layout.

Numbers are right-aligned with zeros, text left-aligned with spaces; a layout
item with sub-items repeats once per bill detail (per program and late fee).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .codec import ascii_text
from .profile import BillDataItem


def render(layout: Sequence[BillDataItem], values: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for item in layout:
        if item.item:
            for entry in values.get(item.name, ()):
                parts.append(render(item.item, entry))
        else:
            parts.append(_cell(values.get(item.name, ""), item.width))
    return "".join(parts)


def _cell(value: Any, width: int) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)[-width:].rjust(width, "0")
    return ascii_text(str(value))[:width].ljust(width)


def parse(layout: Sequence[BillDataItem], text: str) -> dict[str, Any]:
    """Read DE48 back (for the virtual bank). Repeated groups run to the end."""
    out: dict[str, Any] = {}
    position = 0
    for item in layout:
        if item.item:
            width = sum(sub.width for sub in item.item)
            entries = []
            while width and position + width <= len(text):
                entries.append(parse(item.item, text[position : position + width]))
                position += width
            out[item.name] = entries
        else:
            out[item.name] = text[position : position + item.width].strip()
            position += item.width
    return out
