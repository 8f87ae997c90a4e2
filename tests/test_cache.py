"""PrefixCache: radix-tree lookups, junction depth, LRU byte budget, stats, persistence and corrupt files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from rwkv7_provider.model import RWKV7State
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rwkv7_provider.runtime.cache import STALE_TMP_SECONDS, TOKEN_BYTES, PrefixCache, Snapshot
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.testing import MERGE_TAIL as TAIL
from rwkv7_provider.testing import MERGE_TEMPLATE as TEMPLATE
from rwkv7_provider.testing import MergeTokenizer
from rwkv7_provider.testing import merge_model as tiny_model

L, C, H, N = 1, 4, 1, 4
SPEC = {"att_x_prev": ((L, 1, C), torch.float32), "wkv": ((L, 1, H, N, N), torch.float32)}
SPEC |= {"ffn_x_prev": ((L, 1, C), torch.float32), "hidden": ((C,), torch.float32)}

TOK = MergeTokenizer()


def snap(value: float) -> Snapshot:
    value = float(value)
    state = RWKV7State(
        torch.full((L, 1, C), value), torch.full((L, 1, H, N, N), value), torch.full((L, 1, C), value)
    )
    return Snapshot(state, torch.full((C,), value))


SNAP_BYTES = snap(0).nbytes


def make_cache(budget: int = 1 << 20, **kwargs) -> PrefixCache:
    return PrefixCache(
        fingerprint="f" * 64, dtype=torch.float32, budget_bytes=budget, expected=SPEC, **kwargs
    )


def test_lookup_returns_the_deepest_snapshot_and_the_shared_depth():
    cache = make_cache()
    cache.insert([1, 2, 3, 4, 5], snap(1))
    cache.insert([1, 2, 3], snap(2))  # splits the edge
    cache.insert([1, 2, 7, 8], snap(3))
    m = cache.lookup([1, 2, 3, 4, 9])
    assert (m.depth, m.shared, m.snapshot.hidden[0].item()) == (3, 4, 2)
    m = cache.lookup([1, 2, 3, 4, 5, 6])
    assert (m.depth, m.shared, m.snapshot.hidden[0].item()) == (5, 5, 1)
    m = cache.lookup([1, 2])
    assert (m.depth, m.snapshot, m.shared) == (0, None, 2)
    assert cache.lookup([9]).shared == 0
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.tokens_reused, stats.tokens_computed) == (2, 2, 8, 6)


def test_paths_without_snapshots_still_give_the_divergence_point():
    cache = make_cache()
    cache.insert([1, 2, 3, 4])
    assert (cache.lookup([1, 2, 3, 9]).shared, cache.lookup([1, 2, 3, 9]).depth) == (3, 0)


def test_an_existing_snapshot_is_kept():
    cache = make_cache()
    first = snap(1)
    cache.insert([1, 2], first)
    cache.insert([1, 2], snap(2))
    assert cache.lookup([1, 2]).snapshot is first
    assert cache.stats().snapshots == 1


def test_lru_eviction_within_the_byte_budget():
    cache = make_cache(budget=2 * SNAP_BYTES + 8 * TOKEN_BYTES)
    cache.insert([1, 2], snap(1))
    cache.insert([3, 4], snap(2))
    cache.lookup([1, 2])  # [3, 4] is now the least recently used
    cache.insert([5, 6], snap(3))
    assert cache.lookup([3, 4]).snapshot is None
    assert cache.lookup([1, 2]).snapshot is not None and cache.lookup([5, 6]).snapshot is not None
    stats = cache.stats()
    assert (stats.evictions, stats.snapshots) == (1, 2)
    assert stats.bytes == 2 * SNAP_BYTES + 6 * TOKEN_BYTES <= stats.budget_bytes


def test_bare_paths_are_pruned_when_over_budget():
    cache = make_cache(budget=SNAP_BYTES + 10 * TOKEN_BYTES)
    cache.insert(list(range(1, 9)))
    cache.insert([20, 21], snap(1))
    cache.insert([30, 31, 32])  # over budget: the oldest bare path goes, the snapshot stays
    assert cache.lookup([1, 2]).shared == 0
    assert cache.lookup([20, 21]).snapshot is not None
    assert cache.stats().bytes == SNAP_BYTES + 5 * TOKEN_BYTES


def test_pruning_merges_inner_nodes_and_keeps_lookups_right():
    cache = make_cache(budget=2 * SNAP_BYTES + 6 * TOKEN_BYTES)
    cache.insert([1, 2, 3, 4], snap(1))
    cache.insert([1, 2, 5, 6], snap(2))
    cache.insert([1, 2, 3, 7], snap(3))  # evicts the [1, 2, 3, 4] snapshot, then its bare leaf
    assert cache.lookup([1, 2, 3, 4]).depth == 0
    assert cache.lookup([1, 2, 3, 4]).shared == 3
    assert cache.lookup([1, 2, 3, 7]).depth == 4 and cache.lookup([1, 2, 5, 6]).depth == 4


def test_too_large_snapshots_and_a_disabled_cache_store_nothing():
    cache = make_cache(budget=SNAP_BYTES // 2)
    cache.insert([1, 2], snap(1))
    assert cache.lookup([1, 2]).snapshot is None and cache.stats().snapshots == 0
    off = make_cache(budget=0)
    off.insert([1, 2], snap(1))
    assert off.lookup([1, 2]).shared == 0 and off.stats().bytes == 0


def test_clear():
    cache = make_cache()
    cache.insert([1, 2], snap(1))
    cache.clear()
    assert cache.lookup([1, 2]).shared == 0
    assert (cache.stats().bytes, cache.stats().snapshots) == (0, 0)


# ---------------------------------------------------------------- persistence


def test_persisted_snapshots_make_a_restart_warm(tmp_path):
    model = tiny_model()
    first = Engine(model, TOK, cache_dir=tmp_path)
    prompts = [TOK.encode(TEMPLATE + u + TAIL) for u in ("apples", "bananas", "cherries")]
    first.prefill(prompts[0])
    first.prefill(prompts[1])  # stores (and persists) the junction; prompt ends are not persisted
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 1
    junction = next(i for i, (a, b) in enumerate(zip(*prompts[:2])) if a != b)

    restarted = Engine(model, TOK, cache_dir=tmp_path)
    assert restarted.cache_stats()["snapshots"] == 1
    gen = restarted.generate(prompts[2], max_tokens=4, temperature=0)
    want = Engine(model, TOK, cache_bytes=0)
    assert gen.cached_tokens == junction
    assert gen.text == want.generate(prompts[2], max_tokens=4, temperature=0).text
    assert (restarted.prefill(prompts[2])[1] - want.prefill(prompts[2])[1]).abs().max() <= 1e-5


def test_prewarmed_prefixes_are_persisted_and_eviction_deletes_files(tmp_path):
    model = tiny_model()
    engine = Engine(model, TOK, cache_dir=tmp_path)
    engine.prewarm([TEMPLATE])
    (path,) = tmp_path.rglob("*.safetensors")
    engine.cache.clear()
    assert not path.exists()


def test_prewarming_an_already_cached_prefix_persists_it(tmp_path):
    engine = Engine(tiny_model(), TOK, cache_dir=tmp_path)
    engine.prefill(TOK.encode("Say "))  # a prompt end: kept in memory only
    assert not list(tmp_path.rglob("*.safetensors"))
    assert engine.prewarm(["Say "]) == [4]
    assert len(list(tmp_path.rglob("*.safetensors"))) == 1


def warm_dir(tmp_path):
    engine = Engine(tiny_model(), TOK, cache_dir=tmp_path)
    engine.prewarm([TEMPLATE])
    (path,) = tmp_path.rglob("*.safetensors")
    return path


def corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[:100])


def corrupt_values(path):
    tensors = load_file(path)
    tensors["wkv"][0, 0, 0, 0, 0] = float("nan")
    save_file(tensors, path, metadata=_metadata(path))


def corrupt_finite_values(path):
    """Numbers altered but still finite and plausible: only the checksum can tell."""
    tensors = load_file(path)
    tensors["wkv"] = tensors["wkv"] * 1.5
    save_file(tensors, path, metadata=_metadata(path))


def corrupt_tokens(path):
    meta = _metadata(path)
    meta["tokens"] = json.dumps(json.loads(meta["tokens"])[:-1])
    save_file(load_file(path), path, metadata=meta)


def corrupt_shape(path):
    tensors = load_file(path)
    tensors["hidden"] = tensors["hidden"][:-1].clone()
    save_file(tensors, path, metadata=_metadata(path))


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


@pytest.mark.parametrize(
    "damage", [corrupt_truncate, corrupt_values, corrupt_finite_values, corrupt_tokens, corrupt_shape]
)
def test_corrupt_files_are_ignored_with_a_warning(tmp_path, caplog, damage):
    damage(warm_dir(tmp_path))
    with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
        engine = Engine(tiny_model(), TOK, cache_dir=tmp_path)
    assert "ignoring" in caplog.text
    assert engine.cache_stats()["snapshots"] == 0
    assert engine.generate(TEMPLATE + "x", max_tokens=2).cached_tokens == 0


def test_files_of_another_model_are_never_loaded(tmp_path, caplog):
    path = warm_dir(tmp_path)
    other = Engine(tiny_model(seed=1), TOK, cache_dir=tmp_path)
    assert other.cache_stats()["snapshots"] == 0  # another fingerprint: another subdirectory
    moved = other.cache.directory / path.name
    moved.parent.mkdir(parents=True, exist_ok=True)
    path.rename(moved)
    with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
        again = Engine(tiny_model(seed=1), TOK, cache_dir=tmp_path)
    assert again.cache_stats()["snapshots"] == 0 and "another model" in caplog.text


def test_a_failing_delete_of_an_evicted_file_is_a_warning(tmp_path, caplog, monkeypatch):
    """A read-only cache directory: evicting a snapshot loaded from it must not fail the request."""
    warm_dir(tmp_path)
    engine = Engine(tiny_model(), TOK, cache_dir=tmp_path)
    assert engine.cache_stats()["snapshots"] == 1

    def read_only(self, missing_ok=False):
        raise PermissionError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
        engine.cache.clear()  # drops (and tries to delete) the persisted snapshot
        prompts = [TEMPLATE + f"message {i}" + TAIL for i in range(3)]
        assert all(engine.generate(p, max_tokens=2).completion_tokens >= 0 for p in prompts)
    assert "cannot delete" in caplog.text


def test_files_vanishing_during_start_up_are_skipped(tmp_path, monkeypatch):
    """Another process evicts files between this one's directory listing and its reads."""
    path = warm_dir(tmp_path)
    ghost = path.with_name("0" * 40 + ".safetensors")
    real_glob = Path.glob
    monkeypatch.setattr(Path, "glob", lambda self, pattern: [ghost, *real_glob(self, pattern)])
    engine = Engine(tiny_model(), TOK, cache_dir=tmp_path)
    assert engine.cache_stats()["snapshots"] == 1


def test_a_shared_writable_cache_directory_is_reported(tmp_path, caplog):
    warm_dir(tmp_path)
    tmp_path.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
        Engine(tiny_model(), TOK, cache_dir=tmp_path)
    assert "world-writable" in caplog.text
    caplog.clear()
    tmp_path.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="rwkv7_provider.runtime.cache"):
        Engine(tiny_model(), TOK, cache_dir=tmp_path)
    assert "writable" not in caplog.text


KILLED_WRITER = """
import os, sys
from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.testing import MERGE_TEMPLATE, MergeTokenizer, merge_model
os.replace = lambda *args: os._exit(9)  # killed between writing the temp file and renaming it
Engine(merge_model(), MergeTokenizer(), cache_dir=sys.argv[1]).prewarm([MERGE_TEMPLATE])
"""


def test_temp_files_of_a_killed_writer_are_removed_at_start_up(tmp_path):
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 9, done.stderr
    (left,) = tmp_path.rglob(".*.tmp")  # what the killed writer left behind
    old = time.time() - STALE_TMP_SECONDS - 60
    os.utime(left, (old, old))
    in_flight = left.with_name(".another-writer.tmp")  # another process's write, still under way
    in_flight.write_bytes(b"partial")
    engine = Engine(tiny_model(), TOK, cache_dir=tmp_path)
    assert not left.exists() and in_flight.exists()
    assert engine.prewarm([TEMPLATE]) and len(list(tmp_path.rglob("*.safetensors"))) == 1
