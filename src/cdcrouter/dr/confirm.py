"""Capture RPO 0 across regions: the slot is confirmed only up to what region B holds.

Capture normally confirms the slot's LSN as soon as region A's Kafka has committed the events:
PostgreSQL may then recycle that WAL. If region A's Kafka is lost before MirrorMaker 2 copied
those events, they are gone from both places. With ``dr.confirm_after_mirror: true`` in
pipeline.yaml a :class:`MirrorGate` holds the confirmed LSN back until B holds the position and
every raw record before it.

How it knows, without trusting timing: every ``poll_s`` it takes capture's newest committed
position P and then the last stable offsets H of the raw and position topics in A (P's
transaction committed before H was read, so all of P's records lie below H). P is mirrored once,
for every partition, no committed record of A in ``[m + 1, H)`` is left, where ``m`` is the last A
offset MM2 committed as mirrored (``mm2-offsets.<a>.internal`` in B, committed in the same
transaction as the copies). The position topic is one of the checked partitions, so B's mirrored
position record is at P or later too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import TopicPartition

from cdcrouter.capture.pgoutput import lsn_to_str
from cdcrouter.config.connections import KafkaSettings
from cdcrouter.dr.status import SOURCE_CONNECTOR, _admin, committed_ends, earliest, partitions_of, scan
from cdcrouter.errors import DrError

log = logging.getLogger("cdcrouter.dr.confirm")
HELD_WARN_S = 60.0  # warn when the slot has been held back this long
MAX_PENDING = 256  # positions waiting for proof (older ones are thinned out beyond this)


def newest_proven(count: int, proven: Callable[[int], bool]) -> int:
    """The index of the newest of ``count`` pending positions that ``proven(i)`` holds for, or -1.

    Proven positions form a prefix (each later one needs more records in B), so: the newest first
    (under a steady load that is the one), else a binary search (after region B was down)."""
    if count == 0:
        return -1
    if proven(count - 1):
        return count - 1
    best, lo, hi = -1, 0, count - 2
    while lo <= hi:
        mid = (lo + hi) // 2
        if proven(mid):
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


@dataclass(frozen=True)
class _Pending:
    end_lsn: int
    ends: dict[tuple[str, int], int]  # A's last stable offsets read after that position committed


class MirrorGate:
    """Caps the LSN capture confirms at the newest position region B is proven to hold.

    ``committed(lsn)`` is called by capture after each Kafka commit (cheap: it only stores the
    number); a background thread does the Kafka reads. ``cap(lsn)`` is what may be confirmed.
    """

    def __init__(
        self,
        source: KafkaSettings,
        target: KafkaSettings,
        topics: tuple[str, ...],
        *,
        source_alias: str = "a",
        poll_s: float = 0.5,
    ) -> None:
        self.source, self.target, self.topics = source, target, topics
        self.offsets_topic = f"mm2-offsets.{source_alias}.internal"
        self.source_alias = source_alias
        self.poll_s = poll_s
        self._latest = 0  # newest committed end LSN capture reported
        self._mirrored = 0  # newest end LSN proven in B
        self._pending: list[_Pending] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held_since: float | None = None
        self._warned_at = 0.0
        self.last_error: str | None = None

    # -- what capture calls ------------------------------------------------------------------

    def start(self) -> MirrorGate:
        self._thread = threading.Thread(target=self._run, name="cdcrouter-mirror-gate", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def committed(self, end_lsn: int) -> None:
        """Capture committed a position ending at ``end_lsn`` in region A."""
        with self._lock:
            self._latest = max(self._latest, end_lsn)

    def cap(self, lsn: int) -> int:
        """The LSN capture may confirm instead of ``lsn``: never past what B holds."""
        return min(lsn, self._mirrored)

    def all_mirrored(self) -> bool:
        """True when every position capture committed is in B (capture may then confirm an idle
        WAL end past it: nothing was captured there)."""
        with self._lock:
            return self._mirrored >= self._latest

    @property
    def mirrored_lsn(self) -> int:
        return self._mirrored

    # -- the background work -----------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.check_once()
                self.last_error = None
            except Exception as exc:  # B or A unreachable: keep holding the slot, say so
                self.last_error = str(exc)
            self._warn_if_held()

    def check_once(self) -> int:
        """Sample capture's newest position, then advance the mirrored LSN as far as B proves."""
        with self._lock:
            latest = self._latest
        admin = _admin(self.source)
        if latest > max(self._mirrored, self._pending[-1].end_lsn if self._pending else 0):
            tps, missing = partitions_of(admin, self.topics)
            if missing:
                raise DrError(f"cannot check the mirror: {', '.join(missing)} not in region A")
            self._pending.append(_Pending(latest, committed_ends(admin, tps)))
        if not self._pending:
            return self._mirrored
        if len(self._pending) > MAX_PENDING:  # region B down for long: keep every other older one
            half = len(self._pending) // 2
            self._pending[:half] = self._pending[:half:2]
        mirrored = self._mirrored_offsets()
        pending = self._pending
        best = newest_proven(len(pending), lambda i: self._in_target(admin, pending[i], mirrored))
        if best >= 0:
            self._mirrored = pending[best].end_lsn
            del pending[: best + 1]
        return self._mirrored

    def _mirrored_offsets(self) -> dict[tuple[str, int], int]:
        from cdcrouter.dr.mirror import MirrorSpec
        from cdcrouter.dr.status import mirrored_offsets

        spec = MirrorSpec(self.source, self.target, self.topics, source_alias=self.source_alias)
        return mirrored_offsets(spec)

    def _in_target(self, admin, pending: _Pending, mirrored: dict[tuple[str, int], int]) -> bool:
        lows = earliest(admin, [TopicPartition(t, p) for t, p in pending.ends])
        starts = {k: max(mirrored.get(k, -1) + 1, lows[k]) for k in pending.ends}
        done = scan(self.source, starts, pending.ends, lambda _msg: False, timeout_s=30)
        return done == set(pending.ends)

    def _warn_if_held(self) -> None:
        now = time.monotonic()
        with self._lock:
            held = self._mirrored < self._latest
        if not held:
            self._held_since = None
            return
        if self._held_since is None:
            self._held_since = now
        if now - self._held_since >= HELD_WARN_S and now - self._warned_at >= HELD_WARN_S:
            self._warned_at = now
            log.warning(
                "the slot is held back at %s for %.0fs: region B (MirrorMaker 2, %s) does not hold the "
                "newer changes yet%s; PostgreSQL keeps their WAL until it does",
                lsn_to_str(self._mirrored) if self._mirrored else "its start",
                now - self._held_since,
                SOURCE_CONNECTOR,
                f" ({self.last_error})" if self.last_error else "",
            )
