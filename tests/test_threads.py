"""Which threads run torch: every model call of an engine on its scheduler's one thread, and loading a model or
building an engine on a short-lived one, so that no caller's thread keeps an OpenMP pool (model/threads.py)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch
from rwkv7_provider.model.threads import off_thread

from rwkv7_provider.runtime.engine import Engine
from rwkv7_provider.runtime.model_thread import MODEL_THREAD
from rwkv7_provider.testing import MergeTokenizer, merge_model

REPO = Path(__file__).resolve().parents[1]


def test_every_model_call_of_every_engine_runs_on_the_one_model_thread(monkeypatch):
    """Sync, streaming and asyncio calls from two threads, to two engines: the models run on one thread only."""
    engines = [Engine(merge_model(seed=s), MergeTokenizer(), name=f"threads-{s}") for s in (3, 4)]
    seen: list[threading.Thread] = []
    for model in (e.model for e in engines):
        for owner, name in ((model, "forward_hidden"), (model, "decode_step"), (model.head, "forward")):
            inner = getattr(owner, name)

            def spy(*args, _inner=inner, **kwargs):
                seen.append(threading.current_thread())
                return _inner(*args, **kwargs)

            monkeypatch.setattr(owner, name, spy)
    callers = {threading.current_thread()}

    def calls() -> None:
        callers.add(threading.current_thread())
        for engine in engines:
            engine.score("Hello", ["Yes", "No"])
            engine.generate("Hello", max_tokens=4, temperature=0)
            assert "".join(engine.stream("User", max_tokens=3, temperature=0)) is not None

    async def acalls() -> None:
        await asyncio.gather(*(call for e in engines for call in (e.ascore("Answer: ", ["Yes", "No"]),
                                                                  e.agenerate("He", max_tokens=3))))

    calls()
    asyncio.run(acalls())
    other = threading.Thread(target=calls)
    other.start()
    other.join()
    assert len(callers) == 2 and seen
    assert not callers & set(seen), "a caller's thread ran the model"
    assert len(set(seen)) == 1 and seen[0].name == "rwkv7-model"


def test_off_thread_returns_the_result_and_re_raises_the_error():
    me = threading.current_thread()
    assert off_thread(lambda x, *, y: (x + y, threading.current_thread() is not me), 2, y=3) == (5, True)
    with pytest.raises(KeyError, match="missing"):
        off_thread({}.__getitem__, "missing")


PROBE = textwrap.dedent("""
    import json, os, sys, time
    import torch
    torch.set_num_threads(2)
    from rwkv7_provider.model import RWKV7
    from rwkv7_provider.model.rwkv7 import _load_prepared
    from rwkv7_provider.model.tokenizer import load_tokenizer
    from rwkv7_provider.runtime.engine import Engine

    def settled(want=None):
        # an exited thread's OpenMP helpers leave a moment later
        for _ in range(60):
            n = len(os.listdir("/proc/self/task"))
            if want is None or n == want:
                return n
            time.sleep(0.05)
        return n

    path = sys.argv[1]
    before = settled()
    engine = Engine(RWKV7.from_pretrained(path), load_tokenizer("world"))
    for prompt in ("Hello there", "User: hi", "Answer: yes"):
        engine.score(prompt, ["Yes", "No"])
        engine.generate(prompt, max_tokens=4, temperature=0)
    engine.scheduler.shutdown()
    after = settled(before)
    _load_prepared(RWKV7, path, None, "cpu", None, None)  # the same loading, on this thread
    print(json.dumps({"before": before, "after": after, "control": settled()}))
""")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir() or (os.cpu_count() or 1) < 2,
                    reason="counts threads through Linux's /proc; a pool needs two CPUs")
def test_loading_and_serving_leave_no_openmp_pool_on_the_caller_s_thread(tmp_path):
    """In a fresh process with 2 torch threads: after from_pretrained, Engine, scores and generations from the
    main thread, and the scheduler's exit, the process has as many threads as before (no OpenMP pool left on
    the main thread). The control: the same loading run on the main thread leaves one."""
    from rwkv7_provider.model.config import RWKV7Config

    from rwkv7_provider.testing import random_state_dict

    # big enough (a 65536 x 256 head) that loading and kernel measurement run parallel torch ops
    config = RWKV7Config(n_layer=2, n_embd=256, vocab_size=65536, head_size=64, dim_w=16, dim_a=16, dim_v=16,
                         dim_g=32)
    path = tmp_path / "model.pth"
    torch.save(random_state_dict(config, seed=0), path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["after"] == counts["before"], counts
    assert counts["control"] > counts["after"], counts


THREADS_PROBE = textwrap.dedent("""
    import ctypes, json, threading
    import torch
    torch.set_num_threads(1)
    from rwkv7_provider.model.threads import off_thread
    from rwkv7_provider.runtime.model_thread import MODEL_THREAD

    # the OpenMP runtime torch loaded, asked what a parallel region (a oneDNN or MKL product) would use here
    libgomp = next(line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line)
    openmp_threads = ctypes.CDLL(libgomp).omp_get_max_threads
    seen = {}

    def plain():
        seen["plain thread"] = openmp_threads()

    thread = threading.Thread(target=plain)
    thread.start()
    thread.join()
    seen["off_thread"] = off_thread(openmp_threads)
    done = threading.Event()

    class Probe:
        def step(self):
            seen["model thread"] = openmp_threads()
            done.set()
            return False

    MODEL_THREAD.wake(Probe())
    done.wait(30)
    print(json.dumps(seen))
""")


@pytest.mark.skipif(not Path("/proc/self/maps").is_file() or (os.cpu_count() or 1) < 2,
                    reason="finds libgomp through Linux's /proc; needs two CPUs to tell 1 thread from the default")
def test_our_threads_run_products_on_torch_s_thread_count():
    """With torch.set_num_threads(1), a fresh thread's first oneDNN / MKL product would use every CPU (OpenMP's
    default, the control); off_thread and the model thread apply torch's count before any work."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["plain thread"] > 1, seen
    assert seen["off_thread"] == seen["model thread"] == 1, seen


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX")
def test_a_forked_child_serves_requests_with_a_model_thread_of_its_own():
    """Forked while the parent's model thread is alive (that thread does not exist in the child): the child's
    requests still run, with the parent's results."""
    engine = Engine(merge_model(seed=5), MergeTokenizer(), name="fork")
    want = engine.score("Hello", ["Yes", "No"]).logprobs
    assert MODEL_THREAD.thread is not None
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=lambda: queue.put(engine.score("Hello", ["Yes", "No"]).logprobs))
    child.start()
    got = queue.get(timeout=60)
    child.join(10)
    assert child.exitcode == 0 and got == pytest.approx(want, abs=1e-5)
