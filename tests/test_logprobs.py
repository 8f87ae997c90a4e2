"""Log-probabilities of generated tokens (the `logprobs` option): each entry against the model's own
distribution recomputed in one full-sequence forward over the prompt and the generated tokens (the prefill
path, not the batched decode step that produced them), for greedy, sampled, stopped and concurrent requests.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from rwkv7_provider.errors import ParameterError
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.results import Generation
from rwkv7_provider.testing import MergeTokenizer, merge_model

TOK = MergeTokenizer()


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine(merge_model(seed=5), TOK)


def recomputed(engine: Engine, prompt: str, ids: list[int]) -> torch.Tensor:
    """log-softmax of the logits that predicted each of `ids` after `prompt` [len(ids), V]."""
    prompt_ids = TOK.encode(prompt)
    with torch.inference_mode():
        logits, _ = engine.model(torch.tensor([prompt_ids + ids[:-1]]))
    return torch.log_softmax(logits[0, len(prompt_ids) - 1 :].double(), -1)


def assert_entries_match(engine: Engine, prompt: str, g: Generation, top: int) -> None:
    ids = [t.id for t in g.logprobs]
    want = recomputed(engine, prompt, ids)
    for i, entry in enumerate(g.logprobs):
        assert entry.logprob == pytest.approx(want[i, entry.id].item(), abs=1e-4)
        assert entry.bytes == TOK.token_bytes(entry.id)
        values, indices = want[i].topk(top)
        assert [lp for *_, lp in entry.top] == pytest.approx(values.tolist(), abs=1e-4)
        assert [raw for _, raw, _ in entry.top] == [TOK.token_bytes(t) for t in indices.tolist()]


def test_greedy_tokens_are_the_top_alternative_and_match_a_full_forward(engine):
    prompt = "Hello there"
    g = engine.generate(prompt, max_tokens=12, temperature=0, logprobs=3)
    assert len(g.logprobs) == g.completion_tokens == 12
    assert_entries_match(engine, prompt, g, 3)
    assert all(entry.top[0][1] == entry.bytes for entry in g.logprobs)  # greedy: the most likely token
    assert b"".join(entry.bytes for entry in g.logprobs).decode("utf-8", "replace") == g.text
    offsets = [entry.offset for entry in g.logprobs]
    assert offsets == sorted(offsets) and offsets[0] == 0


def test_sampled_tokens_report_the_models_distribution_not_the_samplers(engine):
    """At temperature 1.7 with top-k 5 the draw differs from greedy, yet each logprob is the model's own."""
    prompt = "Sample me"
    g = engine.generate(prompt, max_tokens=16, temperature=1.7, top_k=5, seed=3, logprobs=2)
    assert_entries_match(engine, prompt, g, 2)
    assert any(entry.top[0][1] != entry.bytes for entry in g.logprobs)  # some draws were not the argmax
    assert g.text == engine.generate(prompt, max_tokens=16, temperature=1.7, top_k=5, seed=3).text  # no effect


def test_tokens_after_the_returned_text_are_left_out(engine):
    """With a stop string the entries cover the returned text only (not the tokens of the stop string)."""
    prompt = "Hello there"
    full = engine.generate(prompt, max_tokens=12, temperature=0, logprobs=0)
    stop = full.text[5:7]
    g = engine.generate(prompt, max_tokens=12, temperature=0, logprobs=0, stop=[stop])
    assert g.finish_reason == "stop" and g.text == full.text[: full.text.index(stop)]
    assert g.logprobs == full.logprobs[: len(g.logprobs)]
    assert all(entry.offset < len(g.text) for entry in g.logprobs)
    assert len(g.logprobs) < len(full.logprobs) and all(entry.top == () for entry in g.logprobs)


def test_concurrent_requests_report_what_serial_ones_do(engine):
    prompts = [f"concurrent {i}" for i in range(8)]
    serial = [engine.generate(p, max_tokens=6, temperature=0, logprobs=2).logprobs for p in prompts]

    async def together():
        return await asyncio.gather(*(engine.agenerate(p, max_tokens=6, temperature=0, logprobs=2) for p in prompts))

    for got, want in zip(asyncio.run(together()), serial, strict=True):
        assert [(e.id, e.offset) for e in got.logprobs] == [(e.id, e.offset) for e in want]
        assert [e.logprob for e in got.logprobs] == pytest.approx([e.logprob for e in want], abs=1e-4)


def test_without_the_option_there_are_none_and_bad_counts_are_named(engine):
    assert engine.generate("Hi", max_tokens=2, temperature=0).logprobs is None
    with pytest.raises(ParameterError, match="logprobs"):
        engine.generate("Hi", max_tokens=2, logprobs=21)
