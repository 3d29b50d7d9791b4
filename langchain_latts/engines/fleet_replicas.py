"""The fleet's replicas (pure bookkeeping): what this client knows of each server, when it
leaves the rotation and comes back, and which one the next branch goes to.

A replica failing :data:`FAILURES_TO_EVICT` times in a row leaves the rotation; health
probes, backing off from :data:`PROBE_INTERVAL_S` to :data:`PROBE_INTERVAL_MAX_S`, bring
it back. :func:`pick_replica` places a branch on the replica in rotation with the fewest
outstanding branches. The engine (:mod:`~langchain_latts.engines.vllm_server`) does the
I/O and calls these.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["FAILURES_TO_EVICT", "PROBE_INTERVAL_MAX_S", "PROBE_INTERVAL_S", "Replica", "pick_replica"]

logger = logging.getLogger(__name__)

#: Consecutive failures after which a replica leaves the rotation.
FAILURES_TO_EVICT = 2
#: Seconds before an evicted replica's first health probe; doubles per failed probe.
PROBE_INTERVAL_S = 0.5
PROBE_INTERVAL_MAX_S = 15.0


@dataclass
class Replica:
    """One server and what this client knows of it."""

    url: str
    #: Branches this client is streaming from it now.
    outstanding: int = 0
    #: Branch segments it served to the end.
    served: int = 0
    #: Consecutive failures (reset by a success or a passed health probe).
    failures: int = 0
    in_rotation: bool = True
    last_error: str | None = None
    #: ``time.monotonic()`` of the next health probe while out of rotation.
    probe_at: float = 0.0
    probe_interval: float = PROBE_INTERVAL_S

    def failed(self, error: str, now: float) -> None:
        """Record a failure; the ``FAILURES_TO_EVICT``-th in a row takes it out of rotation."""
        self.failures += 1
        self.last_error = error
        if self.in_rotation and self.failures >= FAILURES_TO_EVICT:
            self.in_rotation = False
            self.probe_interval = PROBE_INTERVAL_S
            self.probe_at = now + self.probe_interval
            logger.warning("server %s left the rotation after %d failures in a row: %s", self.url,
                           self.failures, error)

    def succeeded(self) -> None:
        self.failures = 0
        self.served += 1

    def probed(self, healthy: bool, now: float, error: str | None = None) -> None:
        """A health probe's result: back in rotation, or the next probe later."""
        if healthy:
            if not self.in_rotation:
                logger.warning("server %s is healthy again and back in the rotation", self.url)
            self.in_rotation, self.failures = True, 0
            return
        self.last_error = error or self.last_error
        self.probe_interval = min(self.probe_interval * 2, PROBE_INTERVAL_MAX_S)
        self.probe_at = now + self.probe_interval


def pick_replica(replicas: Sequence[Replica], avoid: Sequence[str] = ()) -> Replica | None:
    """The replica for the next branch (pure): in rotation, not in ``avoid`` when another
    is, with the fewest outstanding branches, then the fewest served, then listed first."""
    live = [r for r in replicas if r.in_rotation]
    preferred = [r for r in live if r.url not in avoid] or live
    if not preferred:
        return None
    return min(preferred, key=lambda r: (r.outstanding, r.served, replicas.index(r)))
