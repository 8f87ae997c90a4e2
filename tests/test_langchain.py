"""`RWKV7LLM` and `ChatRWKV7` with langchain-core 1.x: standard suites, consistency, chains, tools, agents.

Real runs use tiny random checkpoints (rwkv7_provider.testing): their text is noise, but greedy decoding makes it
deterministic, so invoke / stream / batch / async must agree exactly. Tool-calling logic is tested with a
scripted engine (fixed completions), since random weights cannot follow the tool protocol.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.tools import tool
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import BaseModel, Field

from rwkv7_provider import RWKV7LLM, ChatRWKV7
from rwkv7_provider.errors import InputError, ParameterError
from rwkv7_provider.integrations.chat_format import render_chat
from rwkv7_provider.runtime.registry import get_engine
from rwkv7_provider.runtime.results import Generation
from rwkv7_provider.testing import make_checkpoint


@functools.cache
def tiny_model() -> str:
    """One random checkpoint per test process (the standard suites take parameters as properties)."""
    return str(make_checkpoint(Path(tempfile.mkdtemp(prefix="rwkv7_lc_")) / "tiny", seed=5))


@pytest.fixture
def llm() -> RWKV7LLM:
    return RWKV7LLM(model=tiny_model(), temperature=0, max_tokens=16)


@pytest.fixture
def chat() -> ChatRWKV7:
    return ChatRWKV7(model=tiny_model(), temperature=0, max_tokens=16)


class TokenRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


# LangChain's standard suites


class TestChatRWKV7Standard(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatRWKV7]:
        return ChatRWKV7

    @property
    def chat_model_params(self) -> dict:
        return {"model": "default"}  # construction loads nothing

    @property
    def standard_chat_model_params(self) -> dict:
        # timeout / max_retries / api_key belong to remote APIs: a local model has none of them.
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True


class TestChatRWKV7Integration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[ChatRWKV7]:
        return ChatRWKV7

    @property
    def chat_model_params(self) -> dict:
        return {"model": tiny_model(), "max_tokens": 12}

    @property
    def standard_chat_model_params(self) -> dict:
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def has_tool_calling(self) -> bool:
        # The mechanism is tested below (scripted and real runs); these suite tests need a model that
        # actually decides to call the tool, which a random checkpoint cannot.
        return False

    @property
    def has_structured_output(self) -> bool:
        return False  # same reason: structured output is a forced tool call

    @property
    def returns_usage_metadata(self) -> bool:
        return True


# The suite's async tests are bare coroutines and this project runs pytest-asyncio in strict mode. The suite
# forbids overriding its tests, so the mark goes on its own functions (a no-op under asyncio_mode = auto).
for _name, _test in inspect.getmembers(ChatModelIntegrationTests, inspect.iscoroutinefunction):
    if _name.startswith("test_"):
        pytest.mark.asyncio(_test)


def test_imports_stay_light():
    """`import rwkv7_provider` loads neither torch nor nemoguardrails; LangChain users never load nemoguardrails."""
    code = (
        "import sys, rwkv7_provider\n"
        "heavy = ('torch', 'nemoguardrails', 'langchain_core', 'pydantic')\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "from rwkv7_provider import ChatRWKV7, RWKV7LLM\n"
        "assert 'nemoguardrails' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Text LLM


def test_llm_invoke_stream_batch_async_agree(llm):
    text = llm.invoke("Once upon a time")
    assert text and isinstance(text, str)
    assert "".join(llm.stream("Once upon a time")) == text
    assert llm.batch(["Once upon a time", "Once upon a time"]) == [text, text]
    assert asyncio.run(llm.ainvoke("Once upon a time")) == text

    async def astream() -> str:
        return "".join([c async for c in llm.astream("Once upon a time")])

    assert asyncio.run(astream()) == text


IMAGE = [HumanMessage(content=[{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}])]


@pytest.mark.parametrize("make, bad, error", [("llm", "", "empty prompt"), ("chat", IMAGE, "text only")])
def test_batch_return_exceptions_fails_only_the_bad_input(make, bad, error, request):
    model = request.getfixturevalue(make)
    text = lambda out: out if isinstance(out, str) else out.content  # noqa: E731
    good = text(model.invoke("hi"))
    for outs in (model.batch([bad, "hi"], return_exceptions=True),
                 asyncio.run(model.abatch([bad, "hi"], return_exceptions=True))):
        assert isinstance(outs[0], InputError) and error in str(outs[0])
        assert text(outs[1]) == good
    with pytest.raises(InputError, match=error):
        model.batch([bad, "hi"])
    assert [text(o) for o in model.batch(["hi", "hi"])] == [good, good]


def test_llm_callbacks_get_every_token(llm):
    recorder = TokenRecorder()
    chunks = [c for c in llm.stream("Hello", config={"callbacks": [recorder]}) if c]
    assert recorder.tokens == chunks and len(chunks) > 1


def test_llm_stop_cuts_during_generation(llm):
    text = llm.invoke("Once upon a time")
    stop = text[4:6]
    result = llm.generate(["Once upon a time"], stop=[stop]).generations[0][0]
    assert result.text == text[: text.index(stop)]
    info = result.generation_info
    assert info["finish_reason"] == "stop" and info["stop_sequence"] == stop
    assert info["usage"]["output_tokens"] < 16  # stopped early, not cut after max_tokens
    assert "".join(llm.stream("Once upon a time", stop=[stop])) == result.text


def test_llm_call_time_options_and_usage(llm):
    result = llm.generate(["Once upon a time"], max_tokens=3).generations[0][0]
    assert result.generation_info["usage"]["output_tokens"] == 3
    assert result.generation_info["finish_reason"] == "length"
    greedy = llm.invoke("Once upon a time")
    sampled = llm.invoke("Once upon a time", temperature=1.5, seed=7)
    assert sampled == llm.invoke("Once upon a time", temperature=1.5, seed=7) != greedy
    with pytest.raises(ParameterError, match="did you mean 'max_tokens'"):
        llm.invoke("x", max_token=3)
    with pytest.raises(ParameterError, match="did you mean 'temperature'"):  # not pydantic's ValidationError
        RWKV7LLM(model=tiny_model(), temprature=0)


def test_llm_choices_answer_by_scoring():
    guard = RWKV7LLM(model=tiny_model(), choices=["Yes", "No"])
    result = guard.generate(["Question: is this fine?\nAnswer:"]).generations[0][0]
    assert result.text in ("Yes", "No")
    assert 0.5 <= result.generation_info["probability"] <= 1.0
    assert list("".join(guard.stream("Question: is this fine?\nAnswer:"))) == list(result.text)


def test_same_engine_as_the_guardrails_provider():
    from rwkv7_provider.guardrails import RWKV7Model

    engine = RWKV7LLM(model=tiny_model()).client.engine
    assert ChatRWKV7(model=tiny_model()).client.engine is engine
    assert RWKV7Model(tiny_model()).client.engine is engine is get_engine(tiny_model())


# Chat model


def test_chat_invoke_stream_batch_async_agree(chat):
    messages = [SystemMessage("Be brief."), HumanMessage("Hi!")]
    message = chat.invoke(messages)
    assert isinstance(message, AIMessage) and message.content == message.content.strip()
    streamed = [c for c in chat.stream(messages)]
    assert "".join(c.content for c in streamed) == message.content
    assert chat.batch([messages, messages])[1].content == message.content
    assert asyncio.run(chat.ainvoke(messages)).content == message.content

    async def astream() -> str:
        return "".join([c.content async for c in chat.astream(messages)])

    assert asyncio.run(astream()) == message.content


def test_chat_renders_world_format_and_reports_usage(chat):
    history = [
        SystemMessage("Be brief."),
        HumanMessage("Hi!"),
        AIMessage("Hello."),
        HumanMessage("More\n\nplease"),
    ]
    message = chat.invoke(history)
    prompt = render_chat(
        [("system", "Be brief."), ("user", "Hi!"), ("assistant", "Hello."), ("user", "More\nplease")]
    )
    usage = message.usage_metadata
    assert usage["input_tokens"] == len(get_engine(tiny_model()).encode(prompt))
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert usage["input_token_details"]["cache_read"] >= 0
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    again = chat.invoke(history)
    assert again.usage_metadata["input_token_details"]["cache_read"] == usage["input_tokens"]  # all cached


def test_chat_logprobs_in_the_response_metadata(chat):
    """`logprobs=k` (a parameter like any sampling option) puts the tokens' log-probabilities in the response
    metadata in OpenAI's shape, as langchain-openai does; without it there are none."""
    message = chat.invoke("Hi!", logprobs=2)
    content = message.response_metadata["logprobs"]["content"]
    assert len(content) == message.usage_metadata["output_tokens"]
    assert all(set(t) == {"token", "logprob", "bytes", "top_logprobs"} and len(t["top_logprobs"]) == 2 for t in content)
    assert all(t["logprob"] == t["top_logprobs"][0]["logprob"] for t in content)  # greedy: the most likely token
    assert "logprobs" not in chat.invoke("Hi!").response_metadata


def test_chat_streaming_callbacks_and_streaming_flag():
    recorder = TokenRecorder()
    model = ChatRWKV7(model=tiny_model(), temperature=0, max_tokens=10, streaming=True, callbacks=[recorder])
    message = model.invoke("Hi")
    assert recorder.tokens and "".join(recorder.tokens) == message.content


def test_chat_stop_and_max_tokens_at_call_time(chat):
    full = chat.invoke("Tell me a story")
    stop = full.content[3:5]
    cut = chat.invoke("Tell me a story", stop=[stop])
    assert cut.content == full.content[: full.content.index(stop)].strip()
    assert cut.response_metadata["stop_sequence"] == stop
    short = chat.invoke("Tell me a story", max_tokens=2)
    assert short.usage_metadata["output_tokens"] == 2


def test_lcel_chains():
    text_chain = (
        PromptTemplate.from_template("Q: {q}\nA:")
        | RWKV7LLM(model=tiny_model(), temperature=0, max_tokens=8)
        | StrOutputParser()
    )
    assert isinstance(text_chain.invoke({"q": "What is RWKV?"}), str)
    prompt = ChatPromptTemplate.from_messages([("system", "You answer in one word."), ("human", "{q}")])
    chat_chain = prompt | ChatRWKV7(model=tiny_model(), temperature=0, max_tokens=8) | StrOutputParser()
    answer = chat_chain.invoke({"q": "What is RWKV?"})
    assert answer == "".join(chat_chain.stream({"q": "What is RWKV?"}))


# Tools: scripted completions


class ScriptedEngine:
    """Stands in for the engine: returns the given completions in order and records the prompts."""

    def __init__(self, *outputs: str) -> None:
        self.outputs = list(outputs)
        self.prompts: list[str] = []

    def _next(self, prompt: str) -> Generation:
        self.prompts.append(prompt)
        return Generation(self.outputs.pop(0), "stop", None, len(prompt), 5, 0)

    def generate(self, prompt: str, options: Any = None) -> Generation:
        return self._next(prompt)

    async def agenerate(self, prompt: str, options: Any = None) -> Generation:
        return self._next(prompt)

    def stream(self, prompt: str, options: Any = None) -> Iterator[str]:
        done = self._next(prompt)

        class Result:
            generation = done

            def __iter__(self):
                yield done.text

            def close(self) -> None:  # StreamResult's: a consumer that stops early cancels the request
                pass

        return Result()


def scripted(*outputs: str, **params: Any) -> tuple[ChatRWKV7, ScriptedEngine]:
    model = ChatRWKV7(model="default", **params)  # any existing checkpoint: the engine is replaced below
    engine = ScriptedEngine(*outputs)
    model.client._engine = engine
    return model, engine


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny and 21 C in {city}"


class Weather(BaseModel):
    """Weather report for a city."""

    city: str = Field(description="the city")
    celsius: int


def test_bind_tools_parses_the_json_call():
    model, engine = scripted(' {"name": "get_weather", "arguments": {"city": "Paris"}}')
    message = model.bind_tools([get_weather]).invoke(
        [SystemMessage("You help."), HumanMessage("Weather in Paris?")]
    )
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert message.content == "" and message.response_metadata["finish_reason"] == "tool_calls"
    system_turn = engine.prompts[0].split("\n\nUser:")[0]
    assert system_turn.startswith("System: You help.\nYou can use these tools.")
    assert '"name": "get_weather"' in system_turn and "Current weather in a city." in system_turn
    assert engine.prompts[0].endswith("User: Weather in Paris?\n\nAssistant:")


def test_plain_answer_with_tools_bound_stays_text():
    model, _ = scripted(" It is always sunny.")
    message = model.bind_tools([get_weather]).invoke("Hi")
    assert (
        message.content == "It is always sunny." and not message.tool_calls and not message.invalid_tool_calls
    )


@pytest.mark.parametrize(
    "output, error",
    [
        ('{"name": "get_weather", "arguments": {"city": ', "malformed tool call JSON"),
        ('{"name": "delete_everything", "arguments": {}}', "unknown tool"),
    ],
)
def test_malformed_tool_call_is_an_invalid_tool_call(output, error):
    model, _ = scripted(output)
    message = model.bind_tools([get_weather]).invoke("Weather?")
    assert not message.tool_calls
    (bad,) = message.invalid_tool_calls
    assert error in bad["error"]


def test_forced_tool_choice_and_text_answer():
    model, engine = scripted("I don't know.")
    message = model.bind_tools([get_weather], tool_choice="get_weather").invoke("Weather?")
    assert "must answer with a call of the tool 'get_weather'" in engine.prompts[0]
    assert "expected a tool call" in message.invalid_tool_calls[0]["error"]
    with pytest.raises(ParameterError, match="not one of the bound tools"):
        model.bind_tools([get_weather], tool_choice="get_time")


def test_streaming_with_tools_bound_yields_the_parsed_call():
    model, _ = scripted('{"name": "get_weather", "arguments": {"city": "Oslo"}}')
    chunks = list(model.bind_tools([get_weather]).stream("Weather in Oslo?"))
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert [(c["name"], c["args"]) for c in merged.tool_calls] == [("get_weather", {"city": "Oslo"})]


def test_with_structured_output():
    model, _ = scripted('{"name": "Weather", "arguments": {"city": "Rome", "celsius": 25}}')
    assert model.with_structured_output(Weather).invoke("Weather in Rome?") == Weather(
        city="Rome", celsius=25
    )

    model, _ = scripted('{"name": "Weather", "arguments": {"city": "Rome", "celsius": 25}}')
    schema = Weather.model_json_schema() | {"title": "Weather", "description": "Weather report for a city."}
    assert model.with_structured_output(schema).invoke("x") == {"city": "Rome", "celsius": 25}

    model, _ = scripted("Rome is warm.")
    with pytest.raises(OutputParserException, match="instead of a tool call|not a usable tool call"):
        model.with_structured_output(Weather).invoke("Weather in Rome?")

    model, _ = scripted('{"name": "Weather", "arguments": {"city": "Rome"')
    out = model.with_structured_output(Weather, include_raw=True).invoke("Weather in Rome?")
    assert out["parsed"] is None and isinstance(out["parsing_error"], OutputParserException)
    assert out["raw"].invalid_tool_calls


def test_tool_agent_loop_with_a_fake_tool():
    """A minimal agent: call the model, run the tools it asks for, feed the results back, until it answers."""
    model, engine = scripted(
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        "It is sunny and 21 C in Paris.",
    )
    agent = model.bind_tools([get_weather])
    messages: list = [HumanMessage("What's the weather in Paris?")]
    for _ in range(3):
        reply = agent.invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            break
        messages += [get_weather.invoke(call) for call in reply.tool_calls]
    assert messages[-1].content == "It is sunny and 21 C in Paris."
    assert isinstance(messages[2], ToolMessage) and messages[2].content == "sunny and 21 C in Paris"
    second = engine.prompts[1]
    assert 'Assistant: {"name": "get_weather", "arguments": {"city": "Paris"}}' in second
    assert second.endswith("User: Result of tool get_weather: sunny and 21 C in Paris\n\nAssistant:")


# Tools: a real run


def test_real_model_with_tools_never_crashes(chat):
    for choice in (None, "any"):
        message = chat.bind_tools([get_weather], tool_choice=choice).invoke("Weather in Paris?")
        assert isinstance(message, AIMessage)
        if choice == "any":
            assert message.tool_calls or message.invalid_tool_calls
    out = chat.with_structured_output(Weather, include_raw=True).invoke("Weather in Rome?")
    assert out["parsed"] is not None or out["parsing_error"] is not None
