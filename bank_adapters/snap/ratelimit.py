"""Per-partner request rate limit: a token bucket in this process's memory.

A deliberate simplification: with N gateway processes a partner may get up to
N times its limit. A shared limit would need PostgreSQL or another store on
every request, which the benchmark path cannot afford for now.
"""

from __future__ import annotations

import time

PARTNERS_TRACKED_MAX = 10_000


class RateLimiter:
    def __init__(self) -> None:
        # partner -> (tokens left, monotonic time of the last refill)
        self._buckets: dict[str, tuple[float, float]] = {}

    def _tokens(self, key: str, requests_per_second_max: float, now: float) -> float:
        capacity = max(1.0, float(requests_per_second_max))
        tokens, last = self._buckets.get(key, (capacity, now))
        return min(capacity, tokens + (now - last) * requests_per_second_max)

    def allow(self, key: str, requests_per_second_max: float) -> bool:
        """Take one token; the bucket holds at most one second's worth (at least 1)."""
        now = time.monotonic()
        tokens = self._tokens(key, requests_per_second_max, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if key not in self._buckets and len(self._buckets) >= PARTNERS_TRACKED_MAX:
            self._buckets.clear()  # bounded memory; forgetting only makes the limit lenient
        self._buckets[key] = (tokens, now)
        return allowed

    def give_back(self, key: str, requests_per_second_max: float) -> None:
        """Return the token `allow` took, for a request refused before the
        rate limit would have been checked (it never counted)."""
        now = time.monotonic()
        capacity = max(1.0, float(requests_per_second_max))
        self._buckets[key] = (min(capacity, self._tokens(key, requests_per_second_max, now) + 1.0), now)
