"""Private by default: every shipped config, through every documented entry point (LLMRails, Guardrails /
IORails, `nemoguardrails server`), with full generations as well as rails-only calls, never opens a connection
(nor looks up a host) outside the loopback range.

The socket guard is a `sys.addaudithook` on `socket.getaddrinfo` and `socket.connect`: in this process for
the in-process entry points, and through a `sitecustomize.py` on PYTHONPATH for the `nemoguardrails server`
subprocess. Name lookups are recorded too: on a machine without network a lookup of a remote host fails
before any connect would be attempted. uvloop (which connects inside libuv, unseen by audit hooks) is kept
out of the subprocess, so its server runs on the standard asyncio loop; the in-process entry points run
under `asyncio.run` (the standard loop) anyway.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from nemoguardrails import Guardrails, LLMRails, RailsConfig
from server_support import running

from rwkv7_provider.integrations.guardrails.no_main_model import REFUSAL
from rwkv7_provider.server.config import build_config, default_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHIPPED = sorted(p.name for p in CONFIGS.iterdir() if (p / "config.yml").is_file())
SHIPPED_PORT = 8000  # the port configs/moderation_http names
MESSAGE = [{"role": "user", "content": "What's a healthy breakfast?"}]
GUARD = r'''
import json, os, sys

_out = os.environ["RWKV7_SOCKET_LOG"]
# uvloop resolves and connects inside libuv, where no audit event is raised: without it uvicorn runs the
# standard asyncio loop, whose name lookups and connects go through the socket module (same destinations).
sys.modules["uvloop"] = None

def _hook(event, args):
    if event in ("socket.getaddrinfo", "socket.connect"):
        target = args[0] if event == "socket.getaddrinfo" else args[1]
        if isinstance(target, tuple):
            target = target[0]
        with open(_out, "a") as f:
            f.write(json.dumps([event, target if isinstance(target, (str, int)) else repr(target)]) + "\n")

sys.addaudithook(_hook)
'''

_RECORDED: list[tuple[str, object]] = []


def _hook(event: str, args: tuple) -> None:
    if event == "socket.getaddrinfo":
        _RECORDED.append((event, args[0]))
    elif event == "socket.connect":
        address = args[1]
        _RECORDED.append((event, address[0] if isinstance(address, tuple) else address))


sys.addaudithook(_hook)  # audit hooks cannot be removed: it only appends to a list


def outside_loopback(records) -> list:
    """The recorded hosts / addresses that are not loopback (unix socket paths are local by nature)."""
    bad = []
    for event, target in records:
        if target is None or (isinstance(target, str) and target.startswith("/")) or isinstance(target, bytes):
            continue
        host = str(target)
        if host in ("localhost", "") or host.startswith("localhost."):
            continue
        try:
            if ipaddress.ip_address(host).is_loopback:
                continue
        except ValueError:
            pass
        bad.append((event, host))
    return bad


def config_for(name: str, port: int) -> RailsConfig:
    """A shipped config; moderation_http's server address moved to the test server's port."""
    config = RailsConfig.from_path(str(CONFIGS / name))
    for entry in config.models:
        if "base_url" in (entry.parameters or {}):
            entry.parameters["base_url"] = entry.parameters["base_url"].replace(str(SHIPPED_PORT), str(port))
    return config


@pytest.fixture(scope="module")
def guard_server():
    with running(build_config([default_model()])) as url:
        yield url, int(url.rsplit(":", 1)[1])


@pytest.mark.parametrize("name", SHIPPED)
def test_in_process_entry_points_stay_on_loopback(name, guard_server, monkeypatch):
    monkeypatch.setenv("NEMO_GUARDRAILS_NO_USAGE_STATS", "1")
    monkeypatch.delenv("MAIN_MODEL_ENGINE", raising=False)
    _, port = guard_server
    start = len(_RECORDED)
    config = config_for(name, port)
    rails = LLMRails(config)
    assert rails.generate(messages=MESSAGE, options={"rails": ["input"]}).response[0]["content"]
    assert rails.generate(messages=MESSAGE)["content"]  # a full generation: NeMo's main model answers

    try:
        guardrails = Guardrails(config)
    except ValueError as e:  # IORails reaches models over HTTP only: an in-process rwkv7 entry is refused
        assert "base_url" in str(e)
    else:
        async def both():
            try:
                await guardrails.check_async(MESSAGE)
                try:
                    await guardrails.generate_async(messages=MESSAGE)
                except Exception as e:  # noqa: BLE001 - moderation_http's main model is refused by the server
                    assert "404" in str(e)
            finally:
                await guardrails.rails_engine.stop()

        asyncio.run(both())
    if name == "moderation_http":  # the guard sees the HTTP clients' connects (httpx, aiohttp)
        assert ("socket.connect", "127.0.0.1") in _RECORDED[start:]
    assert outside_loopback(_RECORDED[start:]) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nemoguardrails_server_stays_on_loopback(tmp_path, guard_server):
    """`nemoguardrails server --config configs` (the documented command) on every shipped config, with and
    without restricting requests to the input rail, and its model list: nothing leaves loopback."""
    _, guard_port = guard_server
    configs = tmp_path / "configs"
    shutil.copytree(CONFIGS, configs, ignore=shutil.ignore_patterns("__pycache__"))
    http = configs / "moderation_http" / "config.yml"
    http.write_text(http.read_text().replace(f":{SHIPPED_PORT}/", f":{guard_port}/"))
    (tmp_path / "guard").mkdir()
    (tmp_path / "guard" / "sitecustomize.py").write_text(GUARD)
    log = tmp_path / "sockets.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("MAIN_MODEL_ENGINE", "MAIN_MODEL_BASE_URL")}
    env |= {"PYTHONPATH": os.pathsep.join([str(tmp_path / "guard"), env.get("PYTHONPATH", "")]),
            "RWKV7_SOCKET_LOG": str(log), "NEMO_GUARDRAILS_NO_USAGE_STATS": "1"}
    marker = f"marker_{os.getpid()}_{time.monotonic_ns()}"  # tells our server from another one on a reused port
    (configs / marker).mkdir()
    (configs / marker / "config.yml").write_text("models: []\n")
    port = _free_port()
    exe = Path(sys.executable).with_name("nemoguardrails")
    proc = subprocess.Popen([str(exe), "server", "--config", str(configs), "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                listed = httpx.get(f"{url}/v1/rails/configs", timeout=5)
                if listed.status_code == 200 and marker in listed.text:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "nemoguardrails server did not start"
            time.sleep(0.2)
        for name in SHIPPED:
            for options in ({"rails": ["input"]}, None):
                guard = {"config_id": name} | ({"options": options} if options else {})
                body = {"model": "default", "messages": MESSAGE, "guardrails": guard}
                response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
                assert response.status_code == 200, (name, options, response.text)
                answer = response.json()["choices"][0]["message"]["content"]
                if options is None and name != "generation":  # no main model: the local refusal says so
                    assert answer == REFUSAL
        assert proc.poll() is None, "our nemoguardrails server is gone: another process answered"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    records = [tuple(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []
    assert ("socket.connect", "127.0.0.1") in records, "the guard missed moderation_http's call to the server"
    assert outside_loopback(records) == []


def test_the_socket_guard_sees_a_remote_lookup():
    """The guard itself: a lookup of a remote host is recorded and flagged (it may fail: no network here)."""
    start = len(_RECORDED)
    try:
        socket.getaddrinfo("api.openai.com", 443)
    except OSError:
        pass
    assert ("socket.getaddrinfo", "api.openai.com") in outside_loopback(_RECORDED[start:])


def test_configs_without_a_main_model_would_have_leaked():
    """Why the shipped configs name a main model: without one, NeMo's server injects an `openai` main model."""
    from nemoguardrails.server import api

    for name in SHIPPED:
        config = RailsConfig.from_path(str(CONFIGS / name))
        main = api._configured_main_model(config)
        assert main is not None and main.engine != "openai", name
        stripped = config.model_copy(update={"models": [m for m in config.models if m.type != "main"]})
        assert api._build_main_model("default", api._configured_main_model(stripped)).engine == "openai"
    models = yaml.safe_load((CONFIGS / "moderation" / "config.yml").read_text())["models"]
    assert [m["engine"] for m in models if m["type"] == "main"] == ["rwkv7_no_main_model"]
