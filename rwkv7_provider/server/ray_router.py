"""`PrefixAffinityRouter`: a Ray Serve request router that sends a prompt to the replica holding its state.

Ray Serve's pluggable routing (`ray.serve.request_router.RequestRouter`) asks the router, per request, for
ranks of replicas; Ray then sends the request to the least loaded replica of the first rank that has room
(`max_ongoing_requests`), so "prefer this replica unless it is full" needs no code here. The ranking is
`affinity.AffinityPolicy` over an `affinity.PrefixIndex` of what this router has sent where.

Why not Ray's own `PrefixCacheAffinityRouter`: it lives in `ray.llm` (the `ray[llm]` extra, which brings vLLM
and a CUDA torch build), it reads `.prompt` / `.messages` attributes that an HTTP request reaching Ray's proxy
does not have, and it keeps its prefix tree in a separate actor that it calls with blocking `ray.get` twice
per request. This router keeps its index in the process that routes (the `Front` deployment's replica) and
does no remote call of its own.

The router only sees the request's arguments, and for an HTTP request through Ray's proxy that is the ASGI
scope without the body, so the prompt is unknown there. `ray_app.Front` reads the body and calls the model
replicas through a handle with a `ForwardedRequest`, whose `routing_text` this router reads.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.serve.request_router import FIFOMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from .affinity import DEFAULT_BLOCK_CHARS, DEFAULT_IMBALANCE, DEFAULT_MIN_MATCH, AffinityPolicy, PrefixIndex

log = logging.getLogger(__name__)


def request_text(pending: PendingRequest | None) -> str:
    """The routing text of a forwarded HTTP request; "" for anything else (routed by load)."""
    if pending is None or not pending.args:
        return ""
    text = getattr(pending.args[0], "routing_text", "")
    return text if isinstance(text, str) else ""


class PrefixAffinityRouter(FIFOMixin, RequestRouter):
    """Routes by prompt prefix with load spreading (see `affinity.py` for the policy and its parameters,
    given as `request_router_kwargs`: `min_match`, `imbalance`, `block_chars`)."""

    def initialize_state(self, min_match: float = DEFAULT_MIN_MATCH, imbalance: int = DEFAULT_IMBALANCE,
                         block_chars: int = DEFAULT_BLOCK_CHARS) -> None:
        self.policy = AffinityPolicy(min_match=min_match, imbalance=imbalance)
        self.index = PrefixIndex(block_chars=block_chars)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        text = request_text(pending_request)
        by_id = {r.replica_id: r for r in candidate_replicas}
        cache = self.replica_queue_len_cache
        loads = {rid: cache.get(rid) or 0 for rid in by_id}
        ranks = self.policy.rank(list(by_id), loads, self.index.match(text) if text else {}, self.index.sizes,
                                 self.index.indexed(text))
        return [[by_id[rid] for rid in rank] for rank in ranks]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        text = request_text(pending_request)
        if text:
            self.index.insert(text, replica_id)

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self.index.remove(replica_id)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        before = set(self.curr_replicas)
        super().update_replicas(replicas)
        for gone in before - set(self.curr_replicas):
            log.info("replica %s left: forgetting the prefixes routed to it", gone)
            self.index.remove(gone)
