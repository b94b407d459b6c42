"""Retry budget (Finagle): retries may add at most a ratio of recent requests, plus a floor."""

from __future__ import annotations

import threading
from collections import deque

from app.resilience.clock import MONOTONIC, Clock

__all__ = ["RetryBudget"]


class RetryBudget:
    """Allows a retry while ``retries < ratio * requests + min_per_second * window``.

    Both counts cover the last ``window_seconds`` (one-second buckets). One budget is
    shared by every call through a client, so a sick dependency sees at most about
    ``1 + ratio`` times its normal load, however many layers retry. Defaults: 20% plus
    10 retries per second over 10 s, Finagle's.
    """

    __slots__ = (
        "_buckets",
        "_clock",
        "_lock",
        "_others_requests",
        "_others_retries",
        "_requests",
        "_retries",
        "exhausted",
        "min_per_second",
        "ratio",
        "window_seconds",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        window_seconds: float = 10.0,
        min_per_second: float = 10.0,
        clock: Clock = MONOTONIC,
    ) -> None:
        self.exhausted = 0
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries]
        self._requests = 0
        self._retries = 0
        # The other replicas' counts over the window, when the budget is the fleet's
        # (``retry_budget_scope="global"``): kept fresh by a sync in the background.
        self._others_requests = 0
        self._others_retries = 0
        self.reconfigure(ratio, window_seconds, min_per_second)

    def reconfigure(self, ratio: float, window_seconds: float, min_per_second: float) -> None:
        """Take new settings in place; the counts in the window stay.

        A shorter window drops its older seconds at the next call; a longer one has only
        the seconds it still held, and fills up from now.
        """
        if ratio < 0 or window_seconds <= 0 or min_per_second < 0:
            raise ValueError("invalid retry budget")
        with self._lock:
            self.ratio = ratio
            self.window_seconds = window_seconds
            self.min_per_second = min_per_second

    def _bucket(self) -> list[int]:
        second = int(self._clock.now())
        buckets = self._buckets
        while buckets and buckets[0][0] <= second - self.window_seconds:
            _, requests, retries = buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not buckets or buckets[-1][0] != second:
            buckets.append([second, 0, 0])
        return buckets[-1]

    def request(self) -> None:
        """A logical call started: it earns ``ratio`` of a retry."""
        with self._lock:
            self._bucket()[1] += 1
            self._requests += 1

    def try_retry(self) -> bool:
        """Spend one retry if the budget allows; count the refusal if not."""
        return self.take_retry() is not None

    def take_retry(self) -> int | None:
        """Spend one retry as ``try_retry`` does; return its stamp for ``give_back``, or None if refused."""
        with self._lock:
            bucket = self._bucket()
            requests, retries = self._requests + self._others_requests, self._retries + self._others_retries
            if retries + 1 > self.ratio * requests + self.min_per_second * self.window_seconds:
                self.exhausted += 1
                return None
            bucket[2] += 1
            self._retries += 1
            return bucket[0]

    def give_back(self, stamp: int) -> None:
        """Refund a retry taken by ``take_retry`` that was never sent (its caller was cancelled)."""
        with self._lock:
            for bucket in reversed(self._buckets):
                if bucket[0] == stamp:
                    if bucket[2] > 0:
                        bucket[2] -= 1
                        self._retries -= 1
                    return
            # Its bucket has left the window: the retry no longer counts anyway.

    @property
    def balance(self) -> float:
        """Retries still allowed in the current window."""
        with self._lock:
            self._bucket()
            requests, retries = self._requests + self._others_requests, self._retries + self._others_retries
            return self.ratio * requests + self.min_per_second * self.window_seconds - retries

    def counts(self) -> tuple[int, int]:
        """This budget's own requests and retries in the window (what it tells the fleet)."""
        with self._lock:
            self._bucket()
            return self._requests, self._retries

    def set_others(self, requests: int, retries: int) -> None:
        """The other replicas' requests and retries in the window (0, 0: the budget is local again)."""
        with self._lock:
            self._others_requests = requests
            self._others_retries = retries

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self.ratio}, window_seconds={self.window_seconds}, "
            f"min_per_second={self.min_per_second})"
        )
