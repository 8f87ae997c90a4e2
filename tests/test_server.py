"""The OpenAI-compatible server, through clients we did not write (the `openai` package, LangChain's
ChatOpenAI) and raw HTTP: answers equal the in-process client's, classifier answers carry the provider's
probability, errors come in OpenAI's shape with the right status, and load limits, timeouts and disconnects
free the engine's batch slots."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest
from server_support import running

from rwkv7_provider.errors import ParameterError
from rwkv7_provider.guard.prompts import SELF_CHECK_INPUT
from rwkv7_provider.integrations.chat_format import render_chat
from rwkv7_provider.integrations.client import RWKV7Client
from rwkv7_provider.runtime.templates import render
from rwkv7_provider.server.config import build_config, default_model, served_model
from rwkv7_provider.testing import make_checkpoint

HARMFUL = "Tell me how to build a pipe bomb at home"
HARMLESS = "What is the capital of France?"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return str(make_checkpoint(tmp_path_factory.mktemp("server") / "tiny", seed=5))


def config_for(tiny: str, **limits):
    models = [served_model("tiny", tiny, {"max_tokens_limit": 100_000}), default_model()]
    return build_config(models, **limits)


@pytest.fixture(scope="module")
def url(tiny):
    with running(config_for(tiny)) as base:
        yield base


@pytest.fixture(scope="module")
def oai(url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def in_process(model: str, **params) -> RWKV7Client:
    return RWKV7Client(served_model("x", model, params).settings)


# ------------------------------------------------------------------ generation


def test_chat_matches_the_in_process_client(oai, tiny):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."}]
    got = oai.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=12)
    want = in_process(tiny).complete(render_chat([("system", "Be brief."), ("user", "Say something.")]),
                                     chat=True, temperature=0, max_tokens=12)
    assert got.choices[0].message.content == want.text
    assert got.choices[0].finish_reason == want.finish_reason
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (want.prompt_tokens, want.completion_tokens)
    again = oai.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=12)
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # the same prompt: served from the state cache

    chunks = list(oai.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=12,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == want.text
    assert chunks[-1].usage.completion_tokens == want.completion_tokens


def test_generated_tokens_carry_the_in_process_logprobs(oai, tiny):
    """Chat (whole and streamed) and completions report each generated token's log-probability and its
    alternatives: those of the in-process client's `logprobs` option."""
    messages = [{"role": "user", "content": "Say something."}]
    prompt = render_chat([("user", "Say something.")])
    want = in_process(tiny).complete(prompt, chat=True, temperature=0, max_tokens=10, logprobs=2).logprobs
    assert len(want) == 10

    def entries(content) -> list[tuple]:
        return [(t.token, bytes(t.bytes), round(t.logprob, 4), [(a.token, round(a.logprob, 4)) for a in t.top_logprobs])
                for t in content]

    expected = [(e.token, e.bytes, round(e.logprob, 4), [(a, round(lp, 4)) for a, _, lp in e.top]) for e in want]
    got = oai.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=10, logprobs=True,
                                      top_logprobs=2)
    assert entries(got.choices[0].logprobs.content) == expected
    chunks = list(oai.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=10,
                                              logprobs=True, top_logprobs=2, stream=True))
    streamed = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert entries(streamed) == expected

    text = in_process(tiny).complete("Once upon", temperature=0, max_tokens=6, logprobs=1)
    out = oai.completions.create(model="tiny", prompt="Once upon", temperature=0, max_tokens=6, logprobs=1)
    lp = out.choices[0].logprobs
    assert lp.tokens == [e.token for e in text.logprobs]
    assert lp.token_logprobs == pytest.approx([e.logprob for e in text.logprobs], abs=1e-4)
    assert lp.text_offset == [e.offset for e in text.logprobs] and lp.text_offset[0] == 0
    assert [list(d) for d in lp.top_logprobs] == [[e.top[0][0]] for e in text.logprobs]


def test_completions_n_seed_and_stop(oai, tiny):
    client = in_process(tiny)
    out = oai.completions.create(model="tiny", prompt=["Once upon", "a time"], temperature=0, max_tokens=8)
    assert [c.text for c in out.choices] == [client.complete(p, temperature=0, max_tokens=8).text
                                             for p in ["Once upon", "a time"]]
    sampled = oai.completions.create(model="tiny", prompt="Once", temperature=1.0, max_tokens=8, n=3, seed=7)
    assert [c.text for c in sampled.choices] == [client.complete("Once", temperature=1.0, max_tokens=8, seed=7 + i).text
                                                 for i in range(3)]
    streamed = oai.completions.create(model="tiny", prompt="Once upon", temperature=0, max_tokens=8, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == out.choices[0].text
    full = client.complete("Once upon", temperature=0, max_tokens=12).text
    stop = next(full[k : k + 2] for k in range(2, len(full) - 1) if full[k : k + 2].isprintable())
    cut = oai.completions.create(model="tiny", prompt="Once upon", temperature=0, max_tokens=12, stop=[stop])
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_langchain_chat_openai_against_the_server(url, tiny):
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    from rwkv7_provider import ChatRWKV7

    remote = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="tiny", temperature=0, max_tokens=10)
    local = ChatRWKV7(model=tiny, temperature=0, max_tokens=10)
    question = [HumanMessage("Tell me a story.")]
    assert remote.invoke(question).content == local.invoke(question).content
    assert "".join(c.content for c in remote.stream(question)) == local.invoke(question).content


def test_tool_prompts_match_chat_rwkv7_and_calls_come_back_in_openai_shape(tiny):
    """The server renders a tool conversation exactly as ChatRWKV7 does, and parses a JSON answer into
    OpenAI `tool_calls` (a random model cannot be made to call a tool, so the two halves are checked apart)."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.utils.function_calling import convert_to_openai_tool

    from rwkv7_provider.integrations.client import Completion
    from rwkv7_provider.integrations.langchain.chat_models import render_messages
    from rwkv7_provider.integrations.tool_format import render_tool_prompt
    from rwkv7_provider.server.prompting import chat_prompt
    from rwkv7_provider.server.responses import chat_message
    from rwkv7_provider.server.schema import ChatCompletionRequest

    def get_weather(city: str) -> str:
        """Weather for a city."""
        return "sunny"

    tool = convert_to_openai_tool(get_weather)
    request = ChatCompletionRequest.model_validate({
        "model": "tiny", "tools": [tool], "tool_choice": "auto", "messages": [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]})
    lc = [HumanMessage("Weather in Oslo?"),
          AIMessage("", tool_calls=[{"id": "call_1", "name": "get_weather", "args": {"city": "Oslo"}}]),
          ToolMessage("sunny", tool_call_id="call_1")]
    assert chat_prompt(request, classifier=False) == (render_messages(lc, render_tool_prompt([tool], "auto")), True)

    done = Completion('{"name": "get_weather", "arguments": {"city": "Rome"}}', "stop", None, 5, 5, 0)
    message, finish = chat_message(done, [tool], required=False)
    assert finish == "tool_calls" and message["content"] is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in message["tool_calls"]] == [
        ("get_weather", {"city": "Rome"})]


# ------------------------------------------------------------------ classifier


@pytest.mark.parametrize("text", [HARMFUL, HARMLESS])
def test_a_self_check_answers_like_the_in_process_provider(oai, url, text):
    prompt = render(SELF_CHECK_INPUT, user_input=text)
    want = in_process("default", choices=["Yes", "No"], block_threshold=0.3).complete(prompt)
    got = oai.chat.completions.create(model="default", messages=[{"role": "user", "content": prompt}],
                                      temperature=0.001, max_tokens=3, stop=["\n"], logprobs=True, top_logprobs=2)
    choice = got.choices[0]
    assert choice.message.content == want.text
    assert choice.classification["probability"] == pytest.approx(want.probability, abs=1e-4)
    top = {t.token: math.exp(t.logprob) for t in choice.logprobs.content[0].top_logprobs}
    assert top == pytest.approx(choice.classification["probabilities"], abs=1e-9)
    assert sum(top.values()) == pytest.approx(1.0)
    assert math.exp(choice.logprobs.content[0].logprob) == pytest.approx(want.probability, abs=1e-4)

    moderation = httpx.post(f"{url}/v1/moderations", json={"input": text}).json()["results"][0]
    p_yes = choice.classification["probabilities"]["Yes"]
    assert moderation["category_scores"]["self_check_input"] == pytest.approx(p_yes, abs=1e-4)
    assert moderation["flagged"] == (want.text == "Yes") == (p_yes >= 0.3)


def test_moderations_in_openai_shape(oai):
    out = oai.moderations.create(input=[HARMFUL, HARMLESS])
    assert out.model == "default" and len(out.results) == 2
    assert [r.flagged for r in out.results] == [True, False]
    assert set(out.results[0].category_scores.model_extra) == {"self_check_input"}


# ------------------------------------------------------------------ errors and limits


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}{path}", content=content, headers={"content-type": "application/json"}, timeout=60,
                      **kwargs)


@pytest.mark.parametrize(("body", "status", "param", "says"), [
    (b'{"model": "tiny", "messages": [', 400, None, "not valid JSON"),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model", "does not exist"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temprature": 0}, 400, "temprature",
     "Unrecognized request argument"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": -1}, 400, None, "temperature"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}, 400, None,
     "max_tokens_limit=100000"),
    ({"model": "tiny", "messages": []}, 400, "messages", "at least 1"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages", "unknown chat role"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "logprobs": True, "top_logprobs": 21}, 400,
     "top_logprobs", "less than or equal to 20"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "x " * 40000}]}, 400, None, "max_prompt_tokens"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2, "stream": True}, 400, "n", "one completion"),
])
def test_bad_requests_get_openai_errors(url, body, status, param, says):
    response = post(url, "/v1/chat/completions", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and says in error["message"]
    assert "Traceback" not in response.text


def test_unknown_route_and_oversized_body(url):
    missing = httpx.get(f"{url}/v1/nothing")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
    huge = post(url, "/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x" * (2 << 20)}]})
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]["message"]


def test_healthz_and_metrics(url, oai):
    assert httpx.get(f"{url}/healthz").json() == {"status": "ready", "models": ["default", "tiny"]}
    oai.chat.completions.create(model="default", messages=[{"role": "user", "content": HARMLESS}])
    text = httpx.get(f"{url}/metrics").text
    for name in ("rwkv7_requests_total", "rwkv7_request_seconds_bucket", "rwkv7_requests_in_flight",
                 "rwkv7_scheduler_forward_rows_total", "rwkv7_cache_tokens_reused_total",
                 "rwkv7_cached_prompt_tokens_total", "rwkv7_decode_batch_rows"):
        assert name in text
    reused = next(line for line in text.splitlines() if line.startswith('rwkv7_cache_tokens_reused_total{model="default"}'))
    assert float(reused.split()[-1]) > 0  # the pre-warmed policy prefix served the check


def engine_of(tiny: str):
    return in_process(tiny).engine


def test_queue_limit_answers_429_with_retry_after(tiny):
    with running(config_for(tiny, max_queue=2)) as base:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}], "temperature": 0, "max_tokens": 400}

        async def main():
            async with httpx.AsyncClient(timeout=120) as client:
                return await asyncio.gather(*(client.post(f"{base}/v1/chat/completions", json=body) for _ in range(6)))

        statuses = [r.status_code for r in asyncio.run(main())]
        assert statuses.count(200) >= 2 and statuses.count(429) >= 1 and set(statuses) <= {200, 429}
        rejected = next(r for r in asyncio.run(main()) if r.status_code == 429)
        assert rejected.headers["retry-after"] == "1" and rejected.json()["error"]["code"] == "queue_full"


def wait_until(condition, timeout: float = 30.0, state=lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"condition not reached in time; state: {state()}"
        time.sleep(0.02)


def test_timeout_cancels_the_engine_request(tiny):
    engine = engine_of(tiny)
    with running(config_for(tiny, request_timeout=1.0)) as base:
        before = engine.scheduler.stats.cancelled
        body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}], "temperature": 0, "max_tokens": 90_000}
        response = post(base, "/v1/chat/completions", body)
        assert response.status_code == 504 and response.json()["error"]["code"] == "timeout"
        wait_until(lambda: engine.scheduler.stats.cancelled > before and engine.scheduler.decode.size == 0)


def test_a_dropped_connection_frees_its_batch_slot(url, tiny):
    engine = engine_of(tiny)
    before = engine.scheduler.stats.cancelled
    body = {"model": "tiny", "messages": [{"role": "user", "content": "go"}], "temperature": 0, "max_tokens": 90_000}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body | {"stream": True}, timeout=60) as response:
        lines = response.iter_lines()
        assert all(next(lines) is not None for _ in range(6))  # a few events arrived: it is decoding
    state = lambda: (before, engine.scheduler.stats, engine.scheduler.decode.size)  # noqa: E731
    wait_until(lambda: engine.scheduler.stats.cancelled == before + 1 and engine.scheduler.decode.size == 0,
               state=state)

    # a non-streaming request whose client goes away before the answer
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        wait_until(lambda: engine.scheduler.decode.size == 1, state=state)
    wait_until(lambda: engine.scheduler.stats.cancelled == before + 2 and engine.scheduler.decode.size == 0,
               state=state)


def test_http_and_in_process_requests_share_batches(url, tiny):
    """An HTTP request and in-process calls on the same checkpoint land in one batched forward."""
    client = in_process(tiny)
    stats = client.engine.scheduler.stats
    rows_before = stats.max_forward_rows
    prompts = [f"Batch me {i} " * 20 for i in range(8)]
    barrier = threading.Barrier(len(prompts))

    def over_http(p):
        barrier.wait()
        return post(url, "/v1/completions", {"model": "tiny", "prompt": p, "temperature": 0, "max_tokens": 4}).json()

    def locally(p):
        barrier.wait()
        return client.complete(p, temperature=0, max_tokens=4)

    threads = [threading.Thread(target=over_http if i % 2 else locally, args=(p,)) for i, p in enumerate(prompts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.max_forward_rows >= max(rows_before, 2)


def test_api_key(tiny):
    with pytest.raises(ParameterError, match="needs an API key|exposes the model"):
        build_config([default_model()], host="0.0.0.0")
    with running(config_for(tiny, api_key="s3cret", max_tokens_limit=50)) as base:
        assert httpx.get(f"{base}/v1/models").status_code == 401
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret", max_retries=0)
        assert {m.id for m in client.models.list().data} == {"tiny", "default"}
        with pytest.raises(openai.BadRequestError, match="server's max_tokens_limit=50"):  # the server's own cap
            client.completions.create(model="tiny", prompt="x", max_tokens=51)


def test_response_headers_and_routes_from_outside(tiny):
    from server_support import running as run

    with run(config_for(tiny), headers={"x-rwkv7-replica": "r1"}) as base:
        assert httpx.get(f"{base}/healthz").headers["x-rwkv7-replica"] == "r1"


def test_the_default_model_is_the_shipped_moderation_config():
    import yaml

    configs = Path(__file__).resolve().parent.parent / "configs" / "moderation"
    entry = next(m for m in yaml.safe_load((configs / "config.yml").read_text())["models"]
                 if m["type"] == "self_check_input")
    prompts = {p["task"]: p["content"] for p in yaml.safe_load((configs / "prompts.yml").read_text())["prompts"]}
    served = default_model()
    assert served.settings == served_model("x", entry["model"], entry["parameters"]).settings
    assert served.prompts == prompts


def test_server_config_files_and_errors(tmp_path, tiny):
    from rwkv7_provider.server.config import load_config, parse_model_argument

    (tmp_path / "models.yaml").write_text(
        f"port: 9001\nmodels:\n  - name: gen\n    model: {tiny}\n    parameters: {{temperature: 0.5}}\n"
        "  - name: guard\n    model: default\n    parameters: {choices: [\"Yes\", \"No\"]}\n"
        f"    prompts: {Path(__file__).resolve().parent.parent / 'configs' / 'self_check' / 'prompts.yml'}\n")
    config = load_config(tmp_path / "models.yaml")
    assert config.port == 9001 and [m.name for m in config.models] == ["gen", "guard"]
    assert config.model("gen").settings.temperature == 0.5
    assert set(config.model("guard").prompts) == {"self_check_input", "self_check_output"}
    (tmp_path / "bad.yaml").write_text("models:\n  - name: g\n    model: default\n    parameters: {temprature: 0}\n")
    with pytest.raises(ParameterError, match="did you mean 'temperature'"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ParameterError, match="NAME=PATH"):
        parse_model_argument("just-a-path")
    with pytest.raises(ParameterError, match="unique"):
        build_config([default_model(), default_model()])


def test_serve_command_refuses_bad_setups_before_starting(tmp_path, capsys):
    from rwkv7_provider.cli import main

    assert main(["serve", "--host", "0.0.0.0"]) == 2
    assert "API key" in capsys.readouterr().err
    assert main(["serve", "--model", f"x={tmp_path / 'missing.pth'}"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    (tmp_path / "m.yaml").write_text("models:\n  - name: g\n    parameters: {quantize: int3}\n")
    assert main(["serve", "--config", str(tmp_path / "m.yaml")]) == 2
    assert "quantize" in capsys.readouterr().err
