"""How long capture keeps reconnecting: a budget per outage, not per process.

The budget (``reconnect_timeout_s``) starts at the first failure of an outage. Capture that has
streamed for a while, or committed to Kafka, since the last failure is in a new outage, so a broker
restart after hours of running gets the whole budget again instead of none of it.
"""

from __future__ import annotations

import time

STREAMED_OK_S = 10.0  # streaming this long after a reconnect ends the outage


class Outage:
    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.since: float | None = None  # first failure of the current outage
        self.commits = 0  # Kafka commits counted at the last failure
        self.up_since: float | None = None  # when streaming last (re)started

    @property
    def deadline(self) -> float:
        """When the current outage's budget runs out (monotonic clock)."""
        return (self.since or time.monotonic()) + self.budget_s

    def streaming(self) -> None:
        self.up_since = time.monotonic()

    def failed(self, kafka_commits: int) -> bool:
        """Count a failure; True while the current outage is within its budget (retry)."""
        now = time.monotonic()
        recovered = self.up_since is not None and now - self.up_since >= STREAMED_OK_S
        if self.since is None or kafka_commits > self.commits or recovered:
            self.since = now
        self.commits, self.up_since = kafka_commits, None
        return now - self.since <= self.budget_s
