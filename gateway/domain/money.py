"""Money arithmetic in whole rupiah, and the domain's error type.

Indonesian rupiah has no minor unit in practice, so every amount is an ``int``
of rupiah and every rate is an ``int`` of basis points (1 bp = 0.01%). Keeping
floats out entirely means a bill computed twice always gives the same rupiah.
"""

from __future__ import annotations

BASIS_POINTS_PER_WHOLE = 10_000


class DomainError(ValueError):
    """Bad input to a domain rule: names the field and what is wrong with it.

    It subclasses ``ValueError`` so callers that only know the standard library
    still catch it; entry points map it to a client error.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def require_int(field: str, value: object, minimum: int | None = None) -> int:
    """Return ``value`` if it is a real int (not bool) at or above ``minimum``."""
    # bool is a subclass of int; True as a wage is always a caller bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise DomainError(field, f"must be a whole number, got {value!r}")
    if minimum is not None and value < minimum:
        raise DomainError(field, f"must be at least {minimum:,}, got {value:,}")
    return value


def divide_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` rounded half up, for non-negative operands."""
    # Doubling keeps the arithmetic exact: floor((2n + d) / 2d) == floor(n/d + 1/2).
    return (2 * numerator + denominator) // (2 * denominator)


def percent_of(amount_rupiah: int, rate_basis_points: int) -> int:
    """``amount_rupiah * rate_basis_points / 10000`` rounded half up to the rupiah.

    Example: ``percent_of(2_500, 54)`` is 13.5 rupiah, rounded up to 14.
    """
    require_int("amount_rupiah", amount_rupiah, minimum=0)
    require_int("rate_basis_points", rate_basis_points, minimum=0)
    return divide_half_up(amount_rupiah * rate_basis_points, BASIS_POINTS_PER_WHOLE)
