"""The process's one thread for model work: every engine's scheduler runs its iterations on it, in turn.

One thread, and not one per engine or per caller: each thread that runs torch on CPU keeps an OpenMP pool,
and two live pools slow every op down (why, and what it measured: `model/threads.py`). With three engines on
three threads taking turns (bench_cache.py) a warm 0.1B check took 156 ms instead of 119. So model calls stay
on this thread, and loading a model or building an engine runs on a short-lived one (`off_thread`), whose pool
goes with it. The thread exits after `IDLE_EXIT_S` without work, and starts again with the next request.

Engines share this thread in turn (one iteration each; a scheduler waiting up to its `max_wait` for a
fuller batch holds it that long): on CPU they share the same cores anyway.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Protocol

import torch

from ..model.threads import use_torch_threads

IDLE_EXIT_S = 2.0  # the thread exits after this long without work (an unused engine can then be collected)


class Stepper(Protocol):
    def step(self) -> bool:
        """Run one iteration if there is work; whether work remains. Never raises an Exception."""
        ...


class ModelThread:
    """Runs `step()` of each scheduler that has work, in turn, on one thread (started on demand)."""

    def __init__(self, name: str = "rwkv7-model") -> None:
        self.name = name
        self._cond = threading.Condition()
        self._ready: deque[Stepper] = deque()  # schedulers with work, each at most once, in turn
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The running thread (None while none is)."""
        return self._thread

    def wake(self, scheduler: Stepper) -> None:
        """`scheduler` has work: give it a turn (once) and make sure the thread is running."""
        with self._cond:
            if scheduler not in self._ready:
                self._ready.append(scheduler)
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            use_torch_threads()
            with torch.inference_mode():
                while True:
                    with self._cond:
                        if not self._cond.wait_for(lambda: self._ready, IDLE_EXIT_S):
                            return
                        scheduler = self._ready.popleft()
                    if scheduler.step():
                        with self._cond:
                            if scheduler not in self._ready:
                                self._ready.append(scheduler)
        finally:
            with self._cond:
                if self._thread is me:
                    self._thread = None
                    if self._ready:  # woken while exiting: its work needs a thread
                        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                        self._thread.start()

    def _after_fork(self) -> None:
        """In a forked child the parent's thread does not exist: start afresh (torch itself runs a forked
        child's ops on one thread)."""
        self._cond = threading.Condition()
        self._ready.clear()
        self._thread = None


MODEL_THREAD = ModelThread()
os.register_at_fork(after_in_child=MODEL_THREAD._after_fork)
