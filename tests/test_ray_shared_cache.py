"""Replicas sharing one persisted cache_dir: two processes writing, evicting (deleting) and re-reading the same
snapshot files at once never leave a damaged or half-written file, and a new engine on the directory
resumes from the snapshots instead of prefilling again (no Ray needed: the replicas are plain processes)."""

from __future__ import annotations

import itertools
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


def writer(directory: str, seed: int, rounds: int) -> tuple[list[str], int]:
    """A replica with room for 12 snapshots: prompts under 8 random policies store (and persist) the policies'
    junction snapshots and evict others (deleting files the other writer may have written); it restarts now
    and then (reading the directory). Starts when the other writer is ready too, so that they overlap;
    returns the cache's warnings and how many snapshots it evicted."""
    torch.set_num_threads(1)
    caught = _Warnings()
    logging.getLogger("rwkv7_provider.runtime.cache").addHandler(caught)
    rng, model = random.Random(seed), merge_model()
    budget = 12 * _snapshot_bytes() + 4096
    Path(directory, f"ready-{seed}").touch()
    while len(list(Path(directory).glob("ready-*"))) < 2:
        time.sleep(0.01)
    engine, evictions = Engine(model, TOK, cache_dir=directory, cache_bytes=budget), 0
    for i in range(rounds):
        for prefix in rng.sample(PREFIXES[:8], 3):
            engine.prefill(TOK.encode(f"{prefix}message {seed}.{i}"))
        if i % 4 == 3:
            evictions += engine.cache_stats()["evictions"]
            engine = Engine(model, TOK, cache_dir=directory, cache_bytes=budget)
    return caught.messages, evictions


def verified_snapshots(engine: Engine, fresh: Engine) -> int:
    """How many snapshots the writers could have stored `engine` loaded; fails unless each is the state its
    tokens compute to."""
    found = 0
    for prefix, seed in itertools.product(PREFIXES[:8], (1, 2)):
        ids = TOK.encode(f"{prefix}message {seed}.99")
        match = engine.cache.lookup(ids)
        if match.snapshot is not None:
            found += 1
            want, _ = fresh.prefill(ids[:match.depth])
            for got_t, want_t in zip(match.snapshot.state.tensors(), want.tensors()):
                assert torch.allclose(got_t, want_t, atol=1e-5)
    return found


def test_two_processes_writing_one_cache_dir_never_damage_it(tmp_path, caplog):
    directory = str(tmp_path)
    model = merge_model()
    fresh = Engine(model, TOK, cache_bytes=0)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(writer, directory, seed, 12) for seed in (1, 2)]
        reads = found = 0
        with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
            while not all(j.done() for j in jobs):  # a third replica starting meanwhile, again and again
                found += verified_snapshots(Engine(model, TOK, cache_dir=directory), fresh)
                reads += 1
            found += verified_snapshots(Engine(model, TOK, cache_dir=directory), fresh)
        results = [j.result() for j in jobs]
    assert [warnings for warnings, _ in results] == [[], []]
    assert all(evictions > 0 for _, evictions in results)  # files were deleted while the others read
    assert reads > 3 and not caplog.records, [r.getMessage() for r in caplog.records]
    assert found >= 1  # snapshots were read (and matched) while the writers wrote
    files = list(Path(directory).rglob("*"))
    assert not [f for f in files if f.suffix == ".tmp"]  # no temp file left half-written


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


def test_a_replica_without_traffic_for_a_prewarmed_prefix_keeps_it_for_the_others(tmp_path):
    """Pre-warmed prefixes are pinned: a replica whose traffic never uses one (affinity sent it elsewhere)
    does not evict it, so it never deletes the file a replacement replica would start warm from."""
    budget = 3 * _snapshot_bytes() + 4096
    idle = Engine(merge_model(), TOK, cache_dir=tmp_path, cache_bytes=budget)
    (count,) = idle.prewarm([PREFIXES[0]])
    for i in range(12):  # other prompts: their junctions and ends fill and churn the small cache
        idle.prefill(TOK.encode(f"{PREFIXES[1 + i % 5]}message {i}"))
    assert idle.cache_stats()["evictions"] > 0
    assert idle.cache.lookup(TOK.encode(PREFIXES[0])[:count]).depth == count
    replacement = Engine(merge_model(), TOK, cache_dir=tmp_path)
    computed = replacement.cache_stats()["tokens_computed"]
    replacement.prewarm([PREFIXES[0]])
    assert replacement.cache_stats()["tokens_computed"] == computed and replacement.scheduler.stats.forwards == 0
