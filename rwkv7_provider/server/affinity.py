"""Prefix affinity: which replica should serve a prompt so that it resumes from a cached state.

A replica's prefix state cache holds the states after the prompts it has served; a replica that has not seen
a rail's policy text pays the whole prompt again. The router therefore remembers, per replica, the prompt
prefixes it sent there (`PrefixIndex`) and `rank` prefers the replica holding the longest one. This module
knows nothing of Ray (`ray_router.py` is the Ray Serve glue), so the policy is tested without a cluster.

The index works on characters, not tokens: the router runs in the front process, which has no tokenizer, and
requests sharing a character prefix share its tokens up to the last token boundary before it. Prompts are cut
into blocks of `block_chars` characters and each block is identified by a hash of itself and every block
before it (a hash chain), so "the first k blocks are known" is one dictionary lookup per block.

The policy (the one SGLang's cache-aware router and Ray's LLM prefix router follow, with a local index and no
extra actor):
1. If the replicas' loads differ by more than `imbalance` requests, send to the least loaded (a hot prefix
   spreads to a second replica instead of queueing; that replica then holds it too). So does a request
   without a prompt (`GET /v1/models`, ...).
2. Otherwise, if some replica holds at least `min_match` of the prompt, prefer the replica(s) with the
   longest match.
3. Otherwise (a new prefix: say a new policy that shares only the preamble of the known ones) prefer the
   replica(s) holding the fewest blocks, so new prefixes spread over the replicas.
The remaining replicas come next, least loaded first: Ray tries them when the preferred one is full.
"""

from __future__ import annotations

import json
import random
from collections import Counter, OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

DEFAULT_BLOCK_CHARS = 64
DEFAULT_MAX_CHARS = 16384  # prompt characters indexed per request (a policy prefix is far shorter)
DEFAULT_MAX_BLOCKS = 65536  # blocks remembered over all replicas (LRU), a few MB
DEFAULT_MIN_MATCH = 0.5
DEFAULT_IMBALANCE = 8


class Routed(NamedTuple):
    """What the front reads from a request before routing it."""

    text: str  # the prompt text the router matches ("" when there is none)
    stream: bool  # the client asked for a stream (its response comes back piece by piece)


def inspect_request(path: str, body: bytes) -> Routed:
    """The prompt text of an OpenAI request body, as far as the router needs it (chat messages' role and
    content in order, a completion's first prompt, a moderation's first input), and whether it streams.
    Anything else, or a body that is not JSON, gives "" (routed by load alone; the replica answers it,
    errors included)."""
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return Routed("", False)
    if not isinstance(data, dict):
        return Routed("", False)
    stream = data.get("stream") is True
    if path.endswith("/chat/completions"):
        messages = data.get("messages")
        if not isinstance(messages, list):
            return Routed("", stream)
        return Routed("".join(f"{m.get('role')}:{_text(m.get('content'))}\n" for m in messages
                              if isinstance(m, dict)), stream)
    if path.endswith("/completions"):
        return Routed(_text(data.get("prompt"), first=True), stream)
    if path.endswith("/moderations"):
        return Routed(_text(data.get("input"), first=True), stream)
    return Routed("", stream)


def _text(value: object, first: bool = False) -> str:
    """Plain text of a content field: a string, a list of strings (the first one when `first`: a batch of
    prompts is routed by its first) or of OpenAI content parts (their text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if first:
            return _text(value[0]) if value else ""
        return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in value if isinstance(p, (str, dict)))
    return ""


class PrefixIndex:
    """Which replicas were sent which prompt prefixes, in blocks of `block_chars` characters.

    Bounded (`max_blocks`, least recently used blocks go first); not thread-safe (the router calls it from
    its one event loop).
    """

    def __init__(self, block_chars: int = DEFAULT_BLOCK_CHARS, max_chars: int = DEFAULT_MAX_CHARS,
                 max_blocks: int = DEFAULT_MAX_BLOCKS) -> None:
        if block_chars < 1 or max_chars < block_chars or max_blocks < 1:
            raise ValueError(f"need 1 <= block_chars <= max_chars and max_blocks >= 1, got {block_chars}, "
                             f"{max_chars}, {max_blocks}")
        self.block_chars, self.max_chars, self.max_blocks = block_chars, max_chars, max_blocks
        self._owners: OrderedDict[int, set[Hashable]] = OrderedDict()  # chained block hash -> replicas
        self.sizes: Counter[Hashable] = Counter()  # blocks held per replica

    def _chain(self, text: str) -> list[int]:
        """Hashes of the prompt's whole blocks, each covering every block before it."""
        k, end = self.block_chars, min(len(text), self.max_chars)
        chain, h = [], 0
        for i in range(0, end - k + 1, k):
            h = hash((h, text[i:i + k]))
            chain.append(h)
        return chain

    def indexed(self, text: str) -> int:
        """How many characters of `text` the index can match."""
        return min(len(text), self.max_chars)

    def match(self, text: str) -> dict[Hashable, int]:
        """Characters of `text` each replica holds (only replicas holding at least one block)."""
        held: dict[Hashable, int] = {}
        for i, h in enumerate(self._chain(text)):
            owners = self._owners.get(h)
            if not owners:
                break
            self._owners.move_to_end(h)
            for r in owners:
                held[r] = (i + 1) * self.block_chars
        return held

    def insert(self, text: str, replica: Hashable) -> None:
        """Record that `replica` was sent `text` (so it holds the state after its blocks)."""
        for h in self._chain(text):
            owners = self._owners.setdefault(h, set())
            self._owners.move_to_end(h)
            if replica not in owners:
                owners.add(replica)
                self.sizes[replica] += 1
        while len(self._owners) > self.max_blocks:
            _, owners = self._owners.popitem(last=False)
            self.sizes.subtract(owners)

    def remove(self, replica: Hashable) -> None:
        """Forget a replica (it died or was scaled down: its cache went with it)."""
        for h in [h for h, owners in self._owners.items() if replica in owners]:
            owners = self._owners[h]
            owners.discard(replica)
            if not owners:
                del self._owners[h]
        self.sizes.pop(replica, None)


@dataclass(frozen=True)
class AffinityPolicy:
    """`rank`'s thresholds (see the module docstring)."""

    min_match: float = DEFAULT_MIN_MATCH
    imbalance: int = DEFAULT_IMBALANCE

    def __post_init__(self) -> None:
        if not 0 < self.min_match <= 1 or self.imbalance < 0:
            raise ValueError(f"need 0 < min_match <= 1 and imbalance >= 0, got {self.min_match}, {self.imbalance}")

    def rank(self, replicas: Sequence[Hashable], loads: Mapping[Hashable, int], held: Mapping[Hashable, int],
             sizes: Mapping[Hashable, int], length: int) -> list[list[Hashable]]:
        """Replicas in ranks, most preferred first; `loads` are requests in flight (missing: 0), `held` the
        characters of the prompt each replica holds, `length` the prompt's indexed length in characters
        (`PrefixIndex.indexed`)."""
        if not replicas:
            return []
        load = {r: loads.get(r, 0) for r in replicas}
        by_load = sorted(random.sample(list(replicas), len(replicas)), key=load.__getitem__)  # ties: random
        if not length or load[by_load[-1]] - load[by_load[0]] > self.imbalance:
            return [by_load]
        best = max((held.get(r, 0) for r in replicas), default=0)
        if length and best >= self.min_match * length:
            first = [r for r in by_load if held.get(r, 0) == best]
        else:
            fewest = min(sizes.get(r, 0) for r in replicas)
            first = [r for r in by_load if sizes.get(r, 0) == fewest]
        rest = [r for r in by_load if r not in first]
        return [first, rest] if rest else [first]

