"""Prefix-affinity routing policy (no Ray needed): what the router reads from a request, the prefix index,
and the ranking: a prompt goes back to the replica holding its prefix, new prefixes spread, load spills."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict

import pytest

from rwkv7_provider.guard.prompts import INPUT_TEMPLATES
from rwkv7_provider.runtime.templates import render
from rwkv7_provider.server.affinity import AffinityPolicy, PrefixIndex, inspect_request

POLICIES = INPUT_TEMPLATES[1:5]  # four policies sharing only their first sentence
MESSAGES = ["How do I bake bread?", "Tell me how to hotwire a car", "What is 2 + 2?", "You are useless",
            "Write a poem about the sea", "Give me my neighbour's password"]


def body(**fields) -> bytes:
    return json.dumps(fields).encode()


def test_the_front_reads_the_prompt_of_each_openai_endpoint():
    chat = body(model="m", stream=True, messages=[{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert inspect_request("/v1/chat/completions", chat) == ("system:Be brief.\nuser:Hi\n", True)
    assert inspect_request("/v1/completions", body(prompt=["first", "second"])) == ("first", False)
    assert inspect_request("/v1/completions", body(prompt="once")) == ("once", False)
    assert inspect_request("/v1/moderations", body(input="text")) == ("text", False)
    assert inspect_request("/v1/chat/completions", b"{not json") == ("", False)
    assert inspect_request("/v1/chat/completions", body(messages="oops", stream="yes")) == ("", False)
    assert inspect_request("/v1/models", b"") == ("", False)


def test_index_matches_whole_blocks_of_the_longest_shared_prefix():
    index = PrefixIndex(block_chars=4, max_chars=64)
    index.insert("abcdefghij", "a")
    index.insert("abcdXXXXij", "b")
    assert index.match("abcdefgh--") == {"a": 8, "b": 4}
    assert index.match("zzzz") == {}
    assert index.sizes == {"a": 2, "b": 2}  # "abcd" is held by both
    index.remove("a")
    assert index.match("abcdefgh--") == {"b": 4}
    assert index.sizes == {"b": 2}


def test_index_is_bounded():
    index = PrefixIndex(block_chars=4, max_chars=64, max_blocks=3)
    for text in ("aaaa", "bbbb", "cccc", "dddd"):
        index.insert(text, "r")
    assert index.match("aaaa") == {}  # the least recently used block went first
    assert index.match("dddd") == {"r": 4}
    assert index.sizes["r"] == 3


def route(policy: AffinityPolicy, index: PrefixIndex, text: str, loads: dict[str, int]) -> str:
    """What the Ray router does: the least loaded replica of the first rank (all have room here)."""
    ranks = policy.rank(list(loads), loads, index.match(text), index.sizes, index.indexed(text))
    chosen = min(ranks[0], key=lambda r: loads[r])
    index.insert(text, chosen)
    return chosen


def test_each_policy_stays_on_one_replica_and_the_policies_spread():
    random.seed(0)
    policy, index = AffinityPolicy(), PrefixIndex()
    served: dict[int, Counter] = defaultdict(Counter)
    for i in range(200):
        k = random.randrange(len(POLICIES))
        replica = route(policy, index, render(POLICIES[k], user_input=random.choice(MESSAGES) + f" #{i}"),
                        {"r0": 0, "r1": 0})
        served[k][replica] += 1
    assert all(len(replicas) == 1 for replicas in served.values()), served
    owners = Counter(next(iter(replicas)) for replicas in served.values())
    assert owners == {"r0": 2, "r1": 2}  # a new policy goes to the replica holding fewer prefixes


def test_a_busy_replica_spills_to_the_least_loaded():
    policy, index = AffinityPolicy(imbalance=4), PrefixIndex()
    text = render(POLICIES[0], user_input="hello")
    assert route(policy, index, text, {"r0": 0, "r1": 1}) == "r0"
    assert route(policy, index, text, {"r0": 5, "r1": 1}) == "r0"  # within the imbalance: affinity wins
    assert route(policy, index, text, {"r0": 6, "r1": 1}) == "r1"  # beyond it: load wins
    # Now both hold the prefix: the less loaded of the two gets it.
    assert route(policy, index, text, {"r0": 3, "r1": 1, "r2": 0}) == "r1"


def test_the_preferred_replica_comes_first_and_the_rest_follow():
    policy, index = AffinityPolicy(), PrefixIndex()
    text = render(POLICIES[1], user_input="hello")
    index.insert(text, "r1")
    ranks = policy.rank(["r0", "r1", "r2"], {"r0": 0, "r2": 2}, index.match(text), index.sizes,
                        index.indexed(text))
    assert ranks == [["r1"], ["r0", "r2"]]  # r1 full: Ray tries the others, least loaded first
    # A short, unrelated prompt shares too little: the replica holding the fewest prefixes is preferred.
    ranks = policy.rank(["r0", "r1"], {}, index.match("Hi"), index.sizes, 2)
    assert ranks[0] == ["r0"]
    # A request without a prompt goes by load alone, ties broken at random.
    firsts = {policy.rank(["r0", "r1"], {}, {}, index.sizes, 0)[0][0] for _ in range(50)}
    assert firsts == {"r0", "r1"}


@pytest.mark.parametrize("bad", [{"min_match": 0}, {"min_match": 1.5}, {"imbalance": -1}])
def test_bad_policy_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        AffinityPolicy(**bad)
