"""Continuous batching: concurrent requests get exactly what serial execution gives them.

Parity with serial runs (scores within 1e-4, identical greedy text, identical seeded samples, stop strings,
streamed deltas) for requests that resume from different cached snapshots and arrive while others are
prefilling or decoding; cancellation and failures stay with their own request; bursts larger than the
batch; long prompts in bounded pieces; input checks. Every test that claims batching also checks from the
scheduler's counters that requests really shared model calls.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
import pytest
import torch
from rwkv7_provider.model import RWKV7

from rwkv7_provider.errors import InputError, ParameterError
from rwkv7_provider.runtime import scheduler as scheduler_module
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.results import ScoreResult
from rwkv7_provider.runtime.sampling import sample_batch
from rwkv7_provider.runtime.model_thread import IDLE_EXIT_S
from rwkv7_provider.runtime.scheduler import Forward, piece_length
from rwkv7_provider.testing import MERGE_TAIL as TAIL
from rwkv7_provider.testing import MERGE_TEMPLATE as TEMPLATE
from rwkv7_provider.testing import MergeTokenizer, make_checkpoint, merge_model

TOK = MergeTokenizer()
USERS = ["apples", "bananas are yellow", "x", "cherry pie with cream", "dates", "elderberry wine, please"]


@pytest.fixture(scope="module")
def model() -> RWKV7:
    return merge_model(seed=5)


@dataclass(frozen=True)
class Req:
    """One request of a mixed workload: `kind` is score, generate or stream."""

    kind: str
    prompt: str
    options: dict = field(default_factory=dict)


def workload(stop_strings: dict[str, str]) -> list[Req]:
    reqs = []
    for i, user in enumerate(USERS):
        prompt = TEMPLATE + user + TAIL
        reqs.append(Req("score", prompt, {"choices": ["Yes", "No", "Maybe not"]}))
        reqs.append(Req("generate", prompt, {"max_tokens": 6 + 3 * i, "temperature": 0}))
        sampled = {"max_tokens": 12, "temperature": 1.3, "top_p": 0.9, "top_k": 40, "seed": i}
        if i % 2:
            sampled |= {"presence_penalty": 0.4, "frequency_penalty": 0.2}
        reqs.append(Req("stream", prompt, sampled))
        if prompt in stop_strings:
            reqs.append(Req("generate", prompt, {"max_tokens": 20, "temperature": 0, "stop": [stop_strings[prompt]]}))
    reqs.append(Req("stream", "Hello", {"max_tokens": 25, "temperature": 0}))
    return reqs


def run(engine: Engine, req: Req):
    """(kind, comparable result) of one request, run by the calling thread."""
    if req.kind == "score":
        return engine.score(req.prompt, req.options["choices"])
    if req.kind == "generate":
        return engine.generate(req.prompt, **req.options)
    stream = engine.stream(req.prompt, **req.options)
    deltas = list(stream)
    return deltas, stream.generation


def assert_same(got, want) -> None:
    if isinstance(want, ScoreResult):
        assert got.best == want.best
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
        return
    if isinstance(want, tuple):
        assert got[0] == want[0]  # the same deltas, in the same pieces
        got, want = got[1], want[1]
    assert (got.text, got.finish_reason, got.stop_sequence, got.completion_tokens, got.prompt_tokens) == (
        want.text, want.finish_reason, want.stop_sequence, want.completion_tokens, want.prompt_tokens,
    )


def stop_strings(model: RWKV7) -> dict[str, str]:
    """For some prompts, two plain characters from the middle of their greedy answer: a stop that fires."""
    engine = Engine(model, TOK, cache_bytes=0)
    out = {}
    for user in USERS[::2]:
        prompt = TEMPLATE + user + TAIL
        text = engine.generate(prompt, max_tokens=20, temperature=0).text
        k = next(
            (k for k in range(3, len(text) - 1) if all(c.isprintable() and c != "\ufffd" for c in text[k : k + 2])),
            None,
        )
        if k is not None:
            out[prompt] = text[k : k + 2]
    assert out, "no usable stop strings in the greedy answers"
    return out


@pytest.fixture(scope="module")
def serial(model):
    """The workload run one request at a time on a fresh engine: what every concurrent run must give."""
    reqs = workload(stop_strings(model))
    engine = Engine(model, TOK)
    return reqs, [run(engine, r) for r in reqs]


def warmed_engine(model: RWKV7, **kwargs) -> Engine:
    """An engine holding snapshots at several depths, so requests resume from different ones."""
    engine = Engine(model, TOK, min_junction_tokens=1, **kwargs)
    engine.prefill(TOK.encode(TEMPLATE))
    engine.prefill(TOK.encode(TEMPLATE + USERS[1]))
    engine.prefill(TOK.encode(TEMPLATE + USERS[3][:6]))
    return engine


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class Paused:
    """Holds the engine's worker thread inside a request until released, so that the requests submitted
    meanwhile all reach it at once (a deterministic burst)."""

    def __init__(self, engine: Engine) -> None:
        self.release = threading.Event()
        self.engine = engine

    def __enter__(self) -> Self:
        entered = threading.Event()

        def hold():
            entered.set()
            self.release.wait()
            return None
            yield  # a generator of steps that never asks for model work

        self.ticket = self.engine.scheduler.submit(hold())
        entered.wait()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.ticket.result()


def test_threads_arriving_at_different_times_match_serial(model, serial):
    reqs, want = serial
    engine = warmed_engine(model)
    results: dict[int, object] = {}
    long_want = Engine(model, TOK).generate("Hello", max_tokens=400, temperature=0)
    long = engine.stream("Hello", max_tokens=400, temperature=0)  # in flight while the others arrive
    with ThreadPoolExecutor(8) as pool:
        futures = {}
        for k, delta in enumerate(long):
            assert delta
            if k == 1:  # the first half joins while "Hello" is decoding
                futures |= {i: pool.submit(run, engine, r) for i, r in enumerate(reqs[: len(reqs) // 2])}
            if k == 10:
                futures |= {i: pool.submit(run, engine, r) for i, r in enumerate(reqs) if i >= len(reqs) // 2}
        results = {i: f.result() for i, f in futures.items()}
    assert_same(long.generation, long_want)
    for i, req in enumerate(reqs):
        assert_same(results[i], want[i])
    stats = engine.scheduler.stats
    assert stats.max_decode_rows > 1 and stats.failed == 0
    wait_until(lambda: engine.scheduler.decode.size == 0)  # the last row leaves right after its result


def test_a_burst_shares_model_calls_and_matches_serial(model, serial):
    reqs, want = serial
    engine = warmed_engine(model)
    with ThreadPoolExecutor(len(reqs)) as pool, Paused(engine):
        futures = [pool.submit(run, engine, r) for r in reqs]
        wait_until(lambda: len(engine.scheduler._inbox) == len(reqs))  # all queued before the release
    for future, expected in zip(futures, want):
        assert_same(future.result(), expected)
    stats = engine.scheduler.stats
    assert stats.max_forward_rows >= len(reqs) // 2 and stats.max_logprob_requests > 1
    assert stats.max_decode_rows >= len([r for r in reqs if r.kind != "score"]) // 2


def test_a_burst_larger_than_the_batch(model, serial):
    reqs, want = serial
    engine = warmed_engine(model, max_batch_size=3)
    with ThreadPoolExecutor(len(reqs)) as pool, Paused(engine):
        futures = [pool.submit(run, engine, r) for r in reqs]
        wait_until(lambda: len(engine.scheduler._inbox) == len(reqs))
    for future, expected in zip(futures, want):
        assert_same(future.result(), expected)
    stats = engine.scheduler.stats
    assert stats.max_forward_rows == 3 and stats.max_decode_rows == 3


def test_asyncio_tasks_match_serial(model, serial):
    reqs, want = serial
    engine = warmed_engine(model)

    async def one(req: Req, delay: float):
        await asyncio.sleep(delay)
        if req.kind == "score":
            return await engine.ascore(req.prompt, req.options["choices"])
        if req.kind == "generate":
            return await engine.agenerate(req.prompt, **req.options)
        stream = engine.astream(req.prompt, **req.options)
        deltas = [d async for d in stream]
        return deltas, stream.generation

    async def main():
        return await asyncio.gather(*(one(r, 0.002 * (i % 5)) for i, r in enumerate(reqs)))

    for got, expected in zip(asyncio.run(main()), want):
        assert_same(got, expected)
    assert engine.scheduler.stats.max_decode_rows > 1


def test_more_async_clients_than_worker_threads(model):
    """Waiting never takes a thread: 40 concurrent `ascore`s are batched although asyncio's default
    executor has only a handful of threads."""
    engine = Engine(model, TOK)
    prompts = [TEMPLATE + f"message {i}" + TAIL for i in range(40)]
    want = [Engine(model, TOK, cache_bytes=0).score(p, ["Yes", "No"]).logprobs for p in prompts[:3]]

    async def main():
        with Paused(engine):
            tasks = [asyncio.ensure_future(engine.ascore(p, ["Yes", "No"])) for p in prompts]
            while len(engine.scheduler._inbox) < len(prompts):
                await asyncio.sleep(0.001)
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert [r.logprobs for r in results[:3]] == [pytest.approx(w, abs=1e-4) for w in want]
    assert engine.scheduler.stats.max_forward_rows == 32  # the CPU default batch size, then the rest


def test_checks_gathered_together_share_one_forward(model):
    """`arun` wakes the worker at the event loop's next turn: 16 `ascore` calls started by one `gather` all
    reach the first iteration (the forwards of one check, each 16 times as wide), instead of the first running
    alone while the other 15 queue behind it; the results are those of checks run one by one."""
    prompts = [TEMPLATE + f"gathered {i}" + TAIL for i in range(16)]
    alone = Engine(model, TOK, cache_bytes=0)
    want = [alone.score(p, ["Yes", "No"]).logprobs for p in prompts]
    one = alone.scheduler.stats  # forwards and rows of 16 checks one by one
    engine = Engine(model, TOK)
    stats = engine.scheduler.stats

    async def main():
        return await asyncio.gather(*(engine.ascore(p, ["Yes", "No"]) for p in prompts))

    results = asyncio.run(main())
    assert [r.logprobs for r in results] == [pytest.approx(w, abs=1e-4) for w in want]
    assert (stats.forwards, stats.max_forward_rows) == (one.forwards // 16, one.max_forward_rows * 16)


def test_score_all_batches_a_synchronous_callers_checks(model):
    """`Engine.score_all` (what structure-aware scoring runs a message's pieces with) queues its checks at once:
    they share the forwards as a `gather` of `ascore` does, with the results of checks run one by one, in order."""
    prompts = [TEMPLATE + f"together {i}" + TAIL for i in range(6)]
    alone = Engine(model, TOK, cache_bytes=0)
    want = [alone.score(p, ["Yes", "No"], over_choices=True).logprobs for p in prompts]
    engine = Engine(model, TOK, cache_bytes=0)
    got = engine.score_all(prompts, ["Yes", "No"], over_choices=True)
    assert [r.logprobs for r in got] == [pytest.approx(w, abs=1e-4) for w in want]
    stats, one = engine.scheduler.stats, alone.scheduler.stats
    assert (stats.forwards, stats.max_forward_rows) == (one.forwards // 6, one.max_forward_rows * 6)
    with pytest.raises(InputError, match="choices"):
        engine.score_all(prompts, [])


def test_score_all_raises_a_failing_checks_error_and_keeps_the_others(model, monkeypatch):
    engine = Engine(model, TOK, cache_bytes=0)
    poison_forward(engine, monkeypatch)
    with pytest.raises(RuntimeError, match="poisoned token"):
        engine.score_all([TEMPLATE + "fine" + TAIL, TEMPLATE + "\x07" + TAIL], ["Yes", "No"])
    assert engine.scheduler.stats.failed == 1 and not engine.scheduler._live
    assert engine.score_all([TEMPLATE + "fine" + TAIL], ["Yes", "No"])[0].best in ("Yes", "No")


# ---------------------------------------------------------------- cancellation and failures


def poison_forward(engine: Engine, monkeypatch) -> None:
    """Make the engine's model forward raise for any batch holding the token of "\x07"."""
    poison = TOK.encode("\x07")[0]
    forward = engine.model.forward_hidden

    def fragile(ids, state=None, lengths=None):
        if (ids == poison).any():
            raise RuntimeError("poisoned token")
        return forward(ids, state, lengths)

    monkeypatch.setattr(engine.model, "forward_hidden", fragile)


def test_closing_a_stream_mid_way_frees_its_row(model, serial):
    reqs, want = serial
    engine = Engine(model, TOK)
    other_req = next(r for r in reqs if r.kind == "stream" and "seed" in r.options)
    with Paused(engine):  # both enter the decode batch together
        doomed = engine.stream("Hello", max_tokens=10_000, temperature=1.0, seed=1)
        other = engine.stream(other_req.prompt, **other_req.options)
    assert all(next(doomed) for _ in range(3))
    doomed.close()
    assert list(doomed) == []
    with pytest.raises(RuntimeError, match="not finished"):
        _ = doomed.generation
    assert_same((list(other), other.generation), want[reqs.index(other_req)])
    stats = engine.scheduler.stats
    wait_until(lambda: stats.cancelled == 1 and engine.scheduler.decode.size == 0)
    assert stats.max_decode_rows == 2 and stats.decode_rows < 5000  # it stopped long before 10k tokens


def test_an_abandoned_stream_is_cancelled(model):
    engine = Engine(model, TOK)
    stream = engine.stream("Hello", max_tokens=10_000, temperature=0)
    next(stream)
    del stream
    wait_until(lambda: engine.scheduler.stats.cancelled == 1 and engine.scheduler.decode.size == 0)


def test_a_request_cancelled_during_an_iteration_leaves_at_once(model, monkeypatch):
    """Cancelled after the iteration's sweep of cancelled requests but before its decode row is advanced, as
    the only request: it still leaves `_live` (and is counted) without waiting for other work to arrive."""
    engine = Engine(model, TOK)
    streams = []

    def cancelling_sample(logits, samplers):
        streams[0].close()  # the client closes its stream while the leader samples the next tokens
        return sample_batch(logits, samplers)

    monkeypatch.setattr(scheduler_module, "sample_batch", cancelling_sample)
    streams.append(engine.stream("Hello", max_tokens=10_000, temperature=0))
    scheduler = engine.scheduler
    wait_until(lambda: scheduler.stats.cancelled == 1 and not scheduler._live and scheduler.decode.size == 0,
               timeout=IDLE_EXIT_S / 2)


def test_cancelling_asyncio_tasks_and_closing_async_streams(model, serial):
    reqs, want = serial
    engine = Engine(model, TOK)
    keep = next(r for r in reqs if r.kind == "generate" and "stop" not in r.options)

    async def main():
        task = asyncio.ensure_future(engine.agenerate("Hello", max_tokens=10_000, temperature=0))
        stream = engine.astream("Hello", max_tokens=10_000, temperature=0)
        kept = asyncio.ensure_future(engine.agenerate(keep.prompt, **keep.options))
        assert await stream.__anext__()
        await stream.aclose()
        while engine.scheduler.stats.decode_steps < 5:
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return await kept

    assert_same(asyncio.run(main()), want[reqs.index(keep)])
    wait_until(lambda: engine.scheduler.stats.cancelled == 2 and engine.scheduler.decode.size == 0)


def test_a_failing_request_leaves_the_others_alone(model, serial, monkeypatch):
    """One request makes the batched forward raise: the rows are retried alone and only it fails."""
    reqs, want = serial
    engine = warmed_engine(model)
    poison_forward(engine, monkeypatch)
    with ThreadPoolExecutor(len(reqs) + 1) as pool, Paused(engine):
        bad = pool.submit(engine.generate, TEMPLATE + "\x07" + TAIL, max_tokens=4)
        futures = [pool.submit(run, engine, r) for r in reqs]
        wait_until(lambda: len(engine.scheduler._inbox) == len(reqs) + 1)
    with pytest.raises(RuntimeError, match="poisoned token"):
        bad.result()
    for future, expected in zip(futures, want):
        assert_same(future.result(), expected)
    assert engine.scheduler.stats.failed == 1 and engine.scheduler.stats.max_forward_rows > 1


def test_a_request_raising_in_its_own_steps(model):
    engine = Engine(model, TOK)

    def broken():
        yield Forward(TOK.encode("Hello"), None)
        raise KeyError("bug in one request")

    with Paused(engine):
        ticket = engine.scheduler.submit(broken())
        stream = engine.stream("Hello", max_tokens=5, temperature=0)
    with pytest.raises(KeyError, match="bug in one request"):
        ticket.result()
    assert "".join(stream) == Engine(model, TOK).generate("Hello", max_tokens=5, temperature=0).text


def test_asking_for_a_next_token_without_a_decode_row_fails_that_request(model):
    """NEXT is only valid from a request resumed by a decode step (it holds a row); one that asks before it
    ever joined the batch fails with a clear error while a generation decoding beside it is unharmed."""
    engine = Engine(model, TOK)

    def confused():
        yield Forward(TOK.encode("Hello"), None)
        yield scheduler_module.NEXT

    with Paused(engine):
        stream = engine.stream("Hello", max_tokens=5, temperature=0)
        ticket = engine.scheduler.submit(confused())
    with pytest.raises(RuntimeError, match="cannot run"):  # a request left waiting would time out instead
        asyncio.run(asyncio.wait_for(ticket.aresult(), timeout=30))
    assert "".join(stream) == Engine(model, TOK).generate("Hello", max_tokens=5, temperature=0).text


def test_a_lone_request_does_not_wait_for_company(model):
    engine = Engine(model, TOK, max_wait=0.05)
    for p in ("one", "two", "three"):
        engine.score(p, ["Yes", "No"])
    assert engine.scheduler.stats.waits == 0
    with ThreadPoolExecutor(4) as pool, Paused(engine):  # one iteration serving several requests...
        futures = [pool.submit(engine.score, p, ["Yes", "No"]) for p in ("a", "b", "c")]
        wait_until(lambda: len(engine.scheduler._inbox) == 3)
    [f.result() for f in futures]
    for p in ("one", "two", "three", "four"):  # ...then a lone client: it waits once, then never
        engine.score(p, ["Yes", "No"])
    assert engine.scheduler.stats.waits == 1


# ---------------------------------------------------------------- long prompts and input checks


def test_prefill_runs_in_bounded_pieces_with_identical_results(model):
    ids = torch.randint(1, TOK.vocab_size, (300,), generator=torch.Generator().manual_seed(0)).tolist()
    whole = Engine(model, TOK, cache_bytes=0, prefill_tokens=4096)
    pieces = Engine(model, TOK, cache_bytes=0, prefill_tokens=7)
    state_a, logits_a = whole.prefill(ids)
    state_b, logits_b = pieces.prefill(ids)
    assert whole.scheduler.stats.forwards == 1 and pieces.scheduler.stats.forwards == 300 // 7 + 1
    torch.testing.assert_close(logits_b, logits_a, atol=1e-5, rtol=1e-5)
    for a, b in zip(state_a.tensors(), state_b.tensors()):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert pieces.generate(ids, max_tokens=8, temperature=0).text == whole.generate(ids, max_tokens=8, temperature=0).text


def test_piece_length_trades_padding_for_forward_calls():
    assert piece_length([100_000], budget=1024, forward_cost=32) == 1024
    assert piece_length([40, 38, 45, 41], budget=1024, forward_cost=32) == 45  # similar: pad to the longest
    assert piece_length([5, 5, 5, 400], budget=4096, forward_cost=32) == 5  # the long row continues later
    assert piece_length([5, 400], budget=4096, forward_cost=10_000) == 400  # a costly forward: pad it all
    assert piece_length([30] * 64, budget=1024, forward_cost=32) == 16  # rows * length within the budget
    # a WKV that reads packed rows: padding is free, the budget counts real tokens (and 4x for the padded output)
    assert piece_length([5, 5, 5, 400], budget=4096, forward_cost=32, padding_cost=0) == 400
    assert piece_length([53, 41, 78, 66, 41, 62, 39], budget=1024, forward_cost=32, padding_cost=0) == 78
    assert piece_length([30] * 64, budget=1024, forward_cost=32, padding_cost=0) == 16
    assert piece_length([900, 100], budget=1024, forward_cost=32, padding_cost=0) == 900  # padded: 512 a row


def test_max_prompt_tokens(model):
    engine = Engine(model, TOK, max_prompt_tokens=20)
    with pytest.raises(InputError, match="max_prompt_tokens=20"):
        engine.generate("x" * 21)
    with pytest.raises(InputError, match="21 tokens"):
        engine.score([5] * 21, ["Yes", "No"])
    assert engine.generate("x" * 20, max_tokens=1).prompt_tokens == 20
    assert Engine(model, TOK, max_prompt_tokens=None).generate("x" * 5000, max_tokens=1).prompt_tokens == 5000
    with pytest.raises(ParameterError, match="max_prompt_tokens"):
        Engine(model, TOK, max_prompt_tokens=0)
    with pytest.raises(ParameterError, match="max_batch_size"):
        Engine(model, TOK, max_batch_size=0)
    with pytest.raises(ParameterError, match="cuda_graphs"):
        Engine(model, TOK, cuda_graphs=True)


@pytest.mark.parametrize(
    "ids, match",
    [
        ([1.0, 2.0], "must be ints"),
        ([5, 2.7], "must be ints"),
        ([True, 5], "must be ints"),
        (b"hello", "a str or an ordered sequence of int"),
        (bytearray(b"hi"), "a str or an ordered sequence of int"),
        ({5, 6, 7}, "ordered sequence .* got set"),
        ((t for t in [5, 6, 7]), "ordered sequence .* got generator"),
        (iter([5, 6, 7]), "ordered sequence .* got list_iterator"),
        ({5: 0, 6: 0}, "ordered sequence .* got dict"),
        (torch.tensor([1.0, 2.0]), "1-D integer tensor"),
        (torch.tensor([True]), "1-D integer tensor"),
        (torch.tensor([[1, 2]]), "1-D integer tensor"),
        (None, "a str or an ordered sequence of int"),
        (12, "a str or an ordered sequence of int"),
    ],
)
def test_token_ids_are_checked_not_coerced(model, ids, match):
    engine = Engine(model, TOK)
    for call in (engine.prefill, lambda x: engine.generate(x, max_tokens=1), lambda x: engine.score(x, ["a"])):
        with pytest.raises(InputError, match=match):
            call(ids)


def test_integer_like_ids_are_accepted(model):
    engine = Engine(model, TOK)
    want = engine.generate([5, 6, 7], max_tokens=3, temperature=0).text
    assert engine.generate(torch.tensor([5, 6, 7]), max_tokens=3, temperature=0).text == want
    assert engine.generate((5, 6, 7), max_tokens=3, temperature=0).text == want
    assert engine.generate(range(5, 8), max_tokens=3, temperature=0).text == want
    assert engine.generate(np.array([5, 6, 7]), max_tokens=3, temperature=0).text == want


BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_serving.py"


def peak_rss_growth(model_dir: str, tokens: int, chunk: int) -> float:
    """Peak RSS growth of one `tokens`-long score over a 64-token one, in a fresh process (the benchmark's
    worker, on a tiny checkpoint)."""
    cmd = [sys.executable, str(BENCH), "--rss-worker", str(tokens), "--model", model_dir, "--threads", "1",
           "--prefill-tokens", str(chunk)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["growth_mb"]


def test_peak_memory_stays_flat_with_prompt_length(tmp_path):
    """1k and 100k tokens cost the same peak memory with pieces of 512 tokens, while one forward over just
    20k tokens costs far more."""
    model_dir = str(make_checkpoint(tmp_path / "tiny"))
    growth = {n: peak_rss_growth(model_dir, n, 512) for n in (1_000, 100_000)}
    assert growth[100_000] < growth[1_000] + 24, growth
    assert peak_rss_growth(model_dir, 20_000, 40_000) > growth[100_000] + 100  # the check above can fail


def test_serving_settings_reach_the_engine(tmp_path):
    from rwkv7_provider import RWKV7LLM
    from rwkv7_provider.integrations.settings import parse_settings

    path = str(make_checkpoint(tmp_path / "tiny"))
    llm = RWKV7LLM(model=path, max_prompt_tokens=8, max_batch_size=3, max_wait=0, max_tokens=2)
    with pytest.raises(InputError, match="max_prompt_tokens=8"):
        llm.invoke("a prompt that is longer than eight tokens, surely")
    engine = llm.client.engine
    assert (engine.max_prompt_tokens, engine.scheduler.max_batch_size, engine.scheduler.max_wait) == (8, 3, 0)
    assert llm.invoke("short") is not None
    for bad in ({"max_prompt_tokens": 0}, {"max_batch_size": 0}, {"max_wait": 5}):
        with pytest.raises(ParameterError, match=next(iter(bad))):
            parse_settings(bad)


def test_decode_batch_rows_move_and_buckets():
    from rwkv7_provider.runtime.decode_batch import DecodeBatch, buckets, fill_holes

    assert buckets(1) == [1] and buckets(6) == [1, 2, 4, 6] and buckets(64) == [1, 2, 4, 8, 16, 32, 64]
    assert fill_holes([0, 2, 4]) == ([1], [4], [0, 4, 2])  # the static buffers of CUDA graphs: 4 fills 1
    assert fill_holes([3, 4]) == ([0, 1], [3, 4], [3, 4]) and fill_holes([0, 1]) == ([], [], [0, 1])
    model = merge_model(seed=1)
    states = [model.forward_hidden(torch.tensor([[i + 1, i + 2]]))[1] for i in range(5)]
    batch = DecodeBatch(model, max_rows=8)
    with torch.inference_mode():
        batch.add(states[:3], torch.zeros(3, model.config.n_embd))
        batch.add(states[3:], torch.zeros(2, model.config.n_embd))
        assert (batch.size, batch.logits.shape[0]) == (5, 6)  # logits grown by doubling: 3, then 6 rows
        order = batch.keep([0, 2, 4])
    assert order == [0, 2, 4] and batch.size == 3
    assert all(t.is_contiguous() and t.shape[1] == 3 for t in batch.state.tensors())  # what CPU kernels need
    for row, old in enumerate(order):
        for got, want in zip(batch.state.tensors(), states[old].tensors()):
            assert torch.equal(got[:, row], want[:, 0])
