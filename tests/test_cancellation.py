"""Cancellation frees batch slots in the engine itself, whoever cancels: a cancelled asyncio task waiting on
a stream, a closed sync generator of the client, an aclosed async one. (A dropped HTTP connection is in
tests/test_server.py.) Before the fix, cancelled `astream` tasks kept decoding: a full decode batch of
abandoned streams, `stats.cancelled` at 0 and new requests queued behind them.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from rwkv7_provider.integrations.client import RWKV7Client
from rwkv7_provider.integrations.settings import parse_settings
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.testing import MergeTokenizer, make_checkpoint, merge_model

TOK = MergeTokenizer()


def wait_until(condition, timeout: float = 30.0, what=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in time: {what()}"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def engine_model():
    """A random model whose end-of-text logit (token 0) is always 0, below the largest of the other 264 random
    logits: greedy streams never end by themselves (unchanged, "runaway 4" ends after 27 tokens, so whether it
    was still running when cancelled depended on the machine's speed)."""
    model = merge_model(seed=5)
    model.head.weight[0].zero_()
    return model


def test_cancelling_half_of_64_streams(engine_model):
    """32 runaway streams fill the decode batch first (CPU batch size 32); cancelling their tasks frees it:
    the other 32 finish with the text of a serial run, and a new request is served at once."""
    engine = Engine(engine_model, TOK)
    kept_prompts = [f"keep {i}" for i in range(32)]
    serial = {p: engine.generate(p, max_tokens=12, temperature=0).text for p in kept_prompts}

    async def consume(prompt: str, max_tokens: int) -> str:
        return "".join([d async for d in engine.astream(prompt, max_tokens=max_tokens, temperature=0)])

    async def main():
        doomed = [asyncio.ensure_future(consume(f"runaway {i}", 10**6)) for i in range(32)]
        while engine.scheduler.decode.size < 32:
            await asyncio.sleep(0.005)
        kept = [asyncio.ensure_future(consume(p, 12)) for p in kept_prompts]
        await asyncio.sleep(0.05)
        for task in doomed:
            task.cancel()
        results = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), [
            r for r in results if not isinstance(r, asyncio.CancelledError)]
        t0 = time.perf_counter()
        fresh = await asyncio.wait_for(engine.agenerate("fresh", max_tokens=8, temperature=0), 10)
        fresh_s = time.perf_counter() - t0
        return await asyncio.gather(*kept), fresh, fresh_s, doomed

    texts, fresh, fresh_s, doomed = asyncio.run(main())
    assert texts == [serial[p] for p in kept_prompts], [(p, t, serial[p]) for p, t in zip(kept_prompts, texts) if t != serial[p]]
    assert fresh.completion_tokens == 8 and fresh_s < 5, (fresh, fresh_s)
    stats = engine.scheduler.stats
    scheduler = engine.scheduler
    # idle too: the last finished stream's client may see its end before the worker's step has counted itself
    wait_until(lambda: stats.cancelled == 32 and scheduler.decode.size == 0
               and not scheduler._busy(),
               what=lambda: (stats.cancelled, scheduler.decode.size, scheduler._busy()))
    # the cancelled tasks (still referenced here, with their frames in the tracebacks) stopped decoding
    steps = stats.decode_steps
    time.sleep(0.2)
    assert stats.decode_steps == steps, (stats.decode_steps, steps, scheduler.decode.size)
    assert doomed  # kept alive on purpose until here


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    path = make_checkpoint(tmp_path_factory.mktemp("cancel") / "tiny", seed=5)
    return RWKV7Client(parse_settings({"model": str(path), "temperature": 0, "max_tokens": 10**5, "max_tokens_limit": 10**5}))


def test_a_closed_sync_generator_cancels_its_request(client):
    engine = client.engine
    before = engine.scheduler.stats.cancelled
    stream = client.complete_stream("Hello there")
    assert isinstance(next(stream), str)
    keep = stream  # a live reference: only the close may cancel it
    keep.close()
    wait_until(lambda: engine.scheduler.stats.cancelled == before + 1 and engine.scheduler.decode.size == 0)


def test_a_cancelled_task_on_the_client_stream_cancels_its_request(client):
    engine = client.engine
    before = engine.scheduler.stats.cancelled

    async def consume():
        async for _ in client.acomplete_stream("Hello there"):
            pass

    async def main():
        tasks = [asyncio.ensure_future(consume()) for _ in range(4)]
        while engine.scheduler.decode.size < 4:
            await asyncio.sleep(0.005)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return tasks

    tasks = asyncio.run(main())
    wait_until(lambda: engine.scheduler.stats.cancelled == before + 4 and engine.scheduler.decode.size == 0)
    assert len(tasks) == 4


def test_an_aclosed_async_generator_cancels_its_request(client):
    engine = client.engine
    before = engine.scheduler.stats.cancelled

    async def main():
        stream = client.acomplete_stream("Hello there")
        assert isinstance(await stream.__anext__(), str)
        await stream.aclose()
        return stream

    kept = asyncio.run(main())
    wait_until(lambda: engine.scheduler.stats.cancelled == before + 1 and engine.scheduler.decode.size == 0)
    assert kept is not None


def test_max_tokens_is_capped_by_a_provider_setting(client):
    """10**9 tokens used to be accepted (a stream ran on for minutes); now the limit names itself."""
    from rwkv7_provider.errors import ParameterError

    with pytest.raises(ParameterError, match="max_tokens=1000000000 is more than max_tokens_limit=100000"):
        client.complete("Hello", max_tokens=10**9)
    with pytest.raises(ParameterError, match="max_tokens_limit=8192"):
        parse_settings({"max_tokens": 9000})
    assert parse_settings({"max_tokens": 9000, "max_tokens_limit": 9000}).max_tokens == 9000


def test_a_cancel_arriving_mid_iteration_is_counted_and_forgotten(engine_model, monkeypatch):
    """A request cancelled after an iteration's check but before its decode row is served: its row is
    dropped and it must still be counted and leave the scheduler's live set (it used to linger there)."""
    from rwkv7_provider.runtime import scheduler as scheduler_module

    engine = Engine(engine_model, TOK)
    stream = engine.stream("Hello", max_tokens=10**4, temperature=0)
    next(stream)
    ticket = stream._source
    sample = scheduler_module.sample_batch

    def cancelling(logits, samplers):
        ticket.cancel()  # from "another thread", in the middle of the decode step
        return sample(logits, samplers)

    monkeypatch.setattr(scheduler_module, "sample_batch", cancelling)
    sched = engine.scheduler
    wait_until(lambda: sched.stats.cancelled == 1 and sched.decode.size == 0 and not sched._live)
