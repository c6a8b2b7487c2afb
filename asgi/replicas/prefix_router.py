"""A Ray Serve request router that sends a request to the replica whose prefix cache holds its
prompt's start.

It remembers, for each prefix key of each request it routed (prefixes.py), the replica it went
to (the most recent MAX_REMEMBERED keys). A new request goes to the replica that served its
longest known prefix, unless that replica's queue is IMBALANCE more requests longer than the
shortest one: then, as without a match, to the least loaded replica. Ray probes the ranks this
returns in order and skips a replica whose queue is full, so a busy preferred replica never
holds a request back.
"""

from __future__ import annotations

import random
from collections import OrderedDict

from ray.serve.request_router import (
    PendingRequest,
    ReplicaID,
    ReplicaResult,
    RequestRouter,
    RunningReplica,
)

from asgi.replicas.forwarding import ForwardedRequest

MAX_REMEMBERED = 100_000
IMBALANCE = 4


def _prefix_keys(pending_request: PendingRequest | None) -> tuple[int, ...]:
    if pending_request is None:
        return ()
    for arg in pending_request.args:
        if isinstance(arg, ForwardedRequest):
            return arg.prefix_keys
    return ()


class PrefixRouter(RequestRouter):
    def initialize_state(self, **kwargs: object) -> None:
        self._owners: OrderedDict[int, ReplicaID] = OrderedDict()

    def _queue_len(self, replica: RunningReplica) -> int:
        """The replica's queue as last probed (0 when unknown or stale)."""
        return self._replica_queue_len_cache.get(replica.replica_id) or 0

    def _preferred(
        self, candidates: list[RunningReplica], keys: tuple[int, ...]
    ) -> RunningReplica | None:
        by_id = {replica.replica_id: replica for replica in candidates}
        for key in reversed(keys):  # the longest prefix first
            owner = by_id.get(self._owners.get(key))  # type: ignore[arg-type]
            if owner is not None:
                shortest = min(self._queue_len(replica) for replica in candidates)
                return owner if self._queue_len(owner) - shortest <= IMBALANCE else None
        return None

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        preferred = self._preferred(candidate_replicas, _prefix_keys(pending_request))
        # Ray takes the shortest queue of a rank, the first of equals: shuffled, ties spread.
        others = random.sample(candidate_replicas, len(candidate_replicas))
        if preferred is None:
            return [others]
        others.remove(preferred)
        return [[preferred], others] if others else [[preferred]]

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        for key in _prefix_keys(pending_request):
            self._owners[key] = replica_id
            self._owners.move_to_end(key)
        while len(self._owners) > MAX_REMEMBERED:
            self._owners.popitem(last=False)
