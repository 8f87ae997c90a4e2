"""The server on Ray Serve, on a local 2-CPU cluster: two replicas (one thread each) behind one endpoint answer
like the in-process provider, a prompt's policy prefix stays on one replica, a replica killed with SIGKILL
during a load run loses no request and is replaced (warm, from the shared cache_dir), and no Ray process
outlives the module. The `openai` client is the test client."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import defaultdict

import httpx
import pytest
from ray import serve
from ray_support import (
    alive,
    descendants,
    free_port,
    kill_drill,
    replicas,
    run_checks,
    self_check_prompts,
    wait_gone,
)

from rwkv7_provider import cli
from rwkv7_provider.errors import ParameterError
from rwkv7_provider.integrations.client import RWKV7Client
from rwkv7_provider.server.config import build_config, default_model
from rwkv7_provider.server.ray_app import APP_NAME, REPLICA_HEADER, build, build_app, local_cluster


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster with Serve on a free port; every process it started must be gone after it."""
    before = descendants(os.getpid())
    port = free_port()
    started: set[int] = set()
    with local_cluster("127.0.0.1", port, num_cpus=2, log_to_driver=False):
        yield f"http://127.0.0.1:{port}", started
        started |= descendants(os.getpid()) - before
    left = wait_gone(started)
    assert not left, f"Ray processes outlived serve.shutdown() + ray.shutdown(): {sorted(left)}"


@pytest.fixture(scope="module")
def url(cluster, tmp_path_factory):
    base, started = cluster
    cache_dir = tmp_path_factory.mktemp("shared-cache")
    config = build_config([default_model()])
    serve.run(build_app(config, replicas=2, routing="affinity", threads=1, cache_dir=str(cache_dir)),
              name=APP_NAME, route_prefix="/")
    started |= {info["pid"] for info in replicas(base, 2).values()}
    yield base


@pytest.fixture(scope="module")
def reference() -> RWKV7Client:
    """One process serving the same model with the same settings: the verdicts the replicas must give."""
    return RWKV7Client(default_model().settings)


def test_two_replicas_answer_like_one_process_and_keep_a_policy_on_one_replica(url, reference):
    described = replicas(url, 2)
    for rid, info in described.items():
        assert alive(info["pid"]) and info["threads"] == 1
    workload = self_check_prompts(24)
    checks = asyncio.run(run_checks(url, [p for _, p in workload], concurrency=1))
    by_policy = defaultdict(set)
    for (policy, prompt), check in zip(workload, checks):
        assert check.error is None, check.error
        want = reference.complete(prompt)
        assert check.answer == want.text
        assert check.probability == pytest.approx(want.probability, abs=1e-4)
        by_policy[policy].add(check.replica)
    assert set().union(*by_policy.values()) == set(described)  # both replicas served
    assert all(len(served) == 1 for served in by_policy.values()), by_policy  # each policy stayed on one
    assert sum(c.cached_tokens > 0 for c in checks) >= len(checks) - 4  # all but each policy's first

    r = httpx.get(f"{url}/v1/models", timeout=30)
    assert r.status_code == 200 and r.headers[REPLICA_HEADER] in described


def test_a_killed_replica_loses_no_request_and_comes_back_warm(url, reference):
    prompts = [p for _, p in self_check_prompts(60, seed=1)]
    drill = kill_drill(url, prompts, concurrency=8, kill_after=12)
    failed = [c.error for c in drill.checks if c.error]
    print(f"\nkill drill: {len(prompts)} sent, {drill.retried} retried, {drill.failed} failed, replica "
          f"{drill.victim} killed, {drill.replacement} serving {drill.recovered_s:.1f} s later")
    assert not failed, failed
    for check in drill.checks:  # every request got the right answer, after the client's retries
        want = reference.complete(check.prompt)
        assert (check.answer, check.probability) == (want.text, pytest.approx(want.probability, abs=1e-4))
    assert drill.replacement not in (drill.victim, "")
    start = drill.replacement_info["cache_at_start"]["default"]
    assert start["snapshots"] >= 1 and start["tokens_computed"] == 0  # loaded from the shared cache_dir

    after = asyncio.run(run_checks(url, prompts[:8], concurrency=4))
    assert all(c.error is None for c in after)


def test_build_and_command_line_arguments_are_checked(capsys):
    with pytest.raises(ParameterError, match="replicaz"):
        build({"replicaz": 2})
    with pytest.raises(ParameterError, match="routing"):
        build({"routing": "round-robin"})
    assert cli.main(["serve", "--replicas", "0"]) == 2
    assert "--replicas must be at least 1" in capsys.readouterr().err
    assert cli.main(["serve", "--cache-dir", "/tmp/x"]) == 2
    assert "go with --replicas" in capsys.readouterr().err


@pytest.mark.slow
def test_the_serve_command_starts_replicas_and_stops_cleanly(tmp_path):
    """`rwkv7-provider serve --replicas 2` on its own local cluster: both replicas answer; SIGTERM stops it and
    every process it started. Slow (a second cluster): pytest -m slow tests/test_ray_serve.py"""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rwkv7_provider.cli", "serve", "--replicas", "2", "--port",
                             str(port)], stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "w"))
    try:
        found = replicas(f"http://127.0.0.1:{port}", 2, timeout=240)
        pids = descendants(proc.pid) | {info["pid"] for info in found.values()}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "log").read_text()[-3000:]
        assert not wait_gone(pids)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
