"""Replicas sharing one persisted cache_dir: two processes writing, evicting (deleting) and re-reading the same
snapshot files at once never leave a damaged or half-written file, and a new engine on the directory
resumes from the snapshots instead of prefilling again (no Ray needed: the replicas are plain processes)."""

from __future__ import annotations

import logging
import multiprocessing
import random
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.testing import MergeTokenizer, merge_model

TOK = MergeTokenizer()
PREFIXES = [f"Policy {i}: " + "do not do that; " * (2 + i % 5) for i in range(24)]


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _snapshot_bytes() -> int:
    state, _ = Engine(merge_model(), TOK, cache_bytes=0).prefill(TOK.encode("x"))
    return state.nbytes + merge_model().config.n_embd * 4


def writer(directory: str, seed: int, rounds: int) -> list[str]:
    """A replica with room for 4 snapshots: pre-warms random policies (each write persisted, each eviction
    deleting a file the other may have written) and restarts now and then (reading the directory). Starts
    when the other writer is ready too, so that they overlap; returns the cache's warnings."""
    torch.set_num_threads(1)
    caught = _Warnings()
    logging.getLogger("rwkv7_provider.runtime.cache").addHandler(caught)
    rng, model = random.Random(seed), merge_model()
    budget = 4 * _snapshot_bytes() + 4096
    Path(directory, f"ready-{seed}").touch()
    while len(list(Path(directory).glob("ready-*"))) < 2:
        time.sleep(0.01)
    engine = Engine(model, TOK, cache_dir=directory, cache_bytes=budget)
    for i in range(rounds):
        engine.prewarm(rng.sample(PREFIXES, 3))
        if i % 4 == 3:
            engine = Engine(model, TOK, cache_dir=directory, cache_bytes=budget)
    return caught.messages


def test_two_processes_writing_one_cache_dir_never_damage_it(tmp_path, caplog):
    directory = str(tmp_path)
    model = merge_model()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(writer, directory, seed, 12) for seed in (1, 2)]
        reads = 0
        with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
            while not all(j.done() for j in jobs):  # a third replica starting meanwhile, again and again
                Engine(model, TOK, cache_dir=directory)
                reads += 1
        results = [j.result() for j in jobs]
    assert results == [[], []]
    assert reads > 3 and not caplog.records, [r.getMessage() for r in caplog.records]
    files = list(Path(directory).rglob("*"))
    assert not [f for f in files if f.suffix == ".tmp"]  # no temp file left half-written

    loaded = Engine(model, TOK, cache_dir=directory)
    fresh = Engine(model, TOK, cache_bytes=0)
    found = 0
    for prefix in PREFIXES:  # every snapshot on disk is the state its prefix computes to
        ids = TOK.encode(prefix)
        match = loaded.cache.lookup(ids)
        if match.depth == len(ids):
            found += 1
            want, _ = fresh.prefill(ids)
            for got_t, want_t in zip(match.snapshot.state.tensors(), want.tensors()):
                assert torch.allclose(got_t, want_t, atol=1e-5)
    assert found >= 1


def test_a_new_replica_resumes_from_the_shared_directory(tmp_path):
    first = Engine(merge_model(), TOK, cache_dir=tmp_path)
    assert first.prewarm(PREFIXES[:4]) == [len(TOK.encode(p)) for p in PREFIXES[:4]]
    second = Engine(merge_model(), TOK, cache_dir=tmp_path)  # what another process would see
    computed = second.cache_stats()["tokens_computed"]
    second.prewarm(PREFIXES[:4])
    assert second.cache_stats()["tokens_computed"] == computed  # nothing prefilled again
    assert second.scheduler.stats.forwards == 0
    prompt = PREFIXES[2] + "and this message"
    got = second.generate(prompt, max_tokens=4, temperature=0)
    assert got.cached_tokens >= len(TOK.encode(PREFIXES[2])) - 1
    assert got.text == Engine(merge_model(), TOK, cache_bytes=0).generate(prompt, max_tokens=4, temperature=0).text
