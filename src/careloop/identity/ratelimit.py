"""A token-bucket rate limiter for sign-in and token requests, keyed by client address or name.

Each key has a bucket of `capacity` tokens that refills at `refill_per_second`; a request takes
one token, or is told how long until one is back. Memory is bounded: a bucket that has been idle
long enough to be full again is indistinguishable from a new one, so it is dropped, and when the
number of keys still reaches `max_keys` the least recently used bucket is dropped. (An attacker
cycling through more than `max_keys` addresses can thus reset the oldest buckets; the account
lockout in `users` is the second line of defence against password guessing.)

`now` is a monotonic clock reading in seconds (time.monotonic), injected by tests.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, capacity: int, refill_per_second: float, *, max_keys: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if refill_per_second <= 0:
            raise ValueError("refill_per_second must be positive")
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.capacity = capacity
        self.refill_per_second = refill_per_second
        self.max_keys = max_keys
        self._full_after = capacity / refill_per_second  # seconds for an empty bucket to fill
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def check(self, key: str, *, now: float | None = None) -> float | None:
        """Take one token for `key`: None when allowed, else the seconds to wait."""
        moment = time.monotonic() if now is None else now
        with self._lock:
            self._evict_idle(moment)
            bucket = self._buckets.pop(key, None)
            if bucket is None:
                bucket = _Bucket(tokens=float(self.capacity), updated=moment)
                while len(self._buckets) >= self.max_keys:
                    self._buckets.popitem(last=False)
            self._refill(bucket, moment)
            self._buckets[key] = bucket  # now the most recently used
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / self.refill_per_second

    def __len__(self) -> int:
        with self._lock:
            return len(self._buckets)

    def _refill(self, bucket: _Bucket, moment: float) -> None:
        elapsed = max(0.0, moment - bucket.updated)  # a clock read out of order adds nothing
        bucket.tokens = min(float(self.capacity), bucket.tokens + elapsed * self.refill_per_second)
        bucket.updated = max(bucket.updated, moment)

    def _evict_idle(self, moment: float) -> None:
        # The least recently used buckets sit at the front: stop at the first one still in use.
        while self._buckets:
            oldest = next(iter(self._buckets.values()))
            if moment - oldest.updated < self._full_after:
                break
            self._buckets.popitem(last=False)
