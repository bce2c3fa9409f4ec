"""Text a wire model can take: PostgreSQL's text (and jsonb) cannot hold the
NUL character, so a field holding one is refused as the caller's mistake,
naming the field, before anything is written (it was a 5xx before session 7).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator

NUL_PROBLEM = "must not contain the NUL character (\\u0000)"


def check_no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError(NUL_PROBLEM)
    return value


class WithoutNul(BaseModel):
    """Base of wire models: every text field refuses NUL (lists and nested
    models are checked by their own fields)."""

    _no_nul = field_validator("*")(check_no_nul)
