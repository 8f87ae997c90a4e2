"""Tool prompt rendering and JSON tool-call parsing (no model needed), and the World chat format."""

from __future__ import annotations

import json

import pytest

from rwkv7_provider.errors import InputError, ParameterError

from rwkv7_provider.integrations.chat_format import clean_reply, content_text, normalize_text, render_chat
from rwkv7_provider.integrations.tool_format import parse_tool_calls, render_calls, render_tool_prompt

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Current time.", "parameters": {}},
}
TOOLS = [WEATHER, TIME]


# World chat format


def test_render_chat_world_format():
    prompt = render_chat(
        [("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Weather?")]
    )
    assert prompt == "System: Be brief.\n\nUser: Hi\n\nAssistant: Hello!\n\nUser: Weather?\n\nAssistant:"


def test_render_chat_collapses_blank_lines_inside_a_message():
    prompt = render_chat([("human", "line one\n\n\nline two\r\n\r\nthree  ")])
    assert prompt == "User: line one\nline two\nthree\n\nAssistant:"
    assert normalize_text("\n\na\n\n") == "a"


def test_render_chat_role_aliases_tool_turn_and_open_assistant_turn():
    prompt = render_chat(
        [("developer", "rules"), ("user", "q"), ("tool", "42", "calc"), ("ai", "The answer")]
    )
    assert prompt == "System: rules\n\nUser: q\n\nUser: Result of tool calc: 42\n\nAssistant: The answer"


def test_render_chat_errors():
    with pytest.raises(InputError, match="empty conversation"):
        render_chat([])
    with pytest.raises(InputError, match="unknown chat role 'narrator'"):
        render_chat([("narrator", "x")])
    with pytest.raises(InputError, match="text only"):
        content_text([{"type": "image_url", "image_url": {"url": "x"}}])


def test_content_parts_and_clean_reply():
    assert content_text([{"type": "text", "text": "a"}, "b"]) == "a\nb"
    assert clean_reply(" Hello there.\n") == "Hello there."


# Tool prompt


def test_tool_prompt_lists_tools_and_convention():
    text = render_tool_prompt(TOOLS)
    assert '"name": "get_weather"' in text and '"description": "Current weather in a city."' in text
    assert '{"name": "<tool name>", "arguments"' in text
    assert "answer the user directly" in text
    assert "must answer with a tool call" in render_tool_prompt(TOOLS, "any")
    assert "'get_time'" in render_tool_prompt(TOOLS, "get_time")
    assert "Do not use any tool" in render_tool_prompt(TOOLS, "none")
    with pytest.raises(ParameterError, match="not one of the bound tools"):
        render_tool_prompt(TOOLS, "get_stock_price")


def test_render_calls_round_trips_through_the_parser():
    calls = [{"name": "get_weather", "args": {"city": "Oslo"}, "id": "a"}]
    parsed = parse_tool_calls(render_calls(calls), TOOLS)
    assert [(c.name, c.args) for c in parsed.calls] == [("get_weather", {"city": "Oslo"})]
    two = calls + [{"name": "get_time", "args": {}, "id": "b"}]
    assert json.loads(render_calls(two))[1] == {"name": "get_time", "arguments": {}}


# Parsing


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "get_weather", "arguments": {"city": "Paris"}}',
        ' {"name": "get_weather", "args": {"city": "Paris"}} trailing words',
        '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```',
        'Sure. {"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
        '[{"name": "get_weather", "parameters": {"city": "Paris"}}]',
    ],
)
def test_parse_accepts_common_spellings(text):
    parsed = parse_tool_calls(text, TOOLS)
    assert not parsed.invalid and parsed.text == ""
    (call,) = parsed.calls
    assert (call.name, call.args) == ("get_weather", {"city": "Paris"})
    assert call.id.startswith("call_")


def test_parse_several_calls_get_distinct_ids():
    parsed = parse_tool_calls('[{"name": "get_time", "arguments": {}}, {"name": "get_time"}]', TOOLS)
    assert [c.name for c in parsed.calls] == ["get_time", "get_time"]
    assert parsed.calls[0].id != parsed.calls[1].id


def test_plain_text_is_an_answer_unless_a_call_is_required():
    assert parse_tool_calls("It is sunny in Paris.", TOOLS).text == "It is sunny in Paris."
    required = parse_tool_calls("It is sunny in Paris.", TOOLS, required=True)
    assert not required.calls and "expected a tool call" in required.invalid[0].error


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"name": "get_weather", "arguments": {"city": "Par', "malformed tool call JSON"),
        ('{"name": "launch_rockets", "arguments": {}}', "unknown tool 'launch_rockets'"),
        ('{"name": "get_weather", "arguments": [1, 2]}', "must be a JSON object"),
        ('{"tool": "get_weather"}', 'string "name"'),
        ("[]", "empty list"),
        ("{{{{", "malformed"),
    ],
)
def test_malformed_output_becomes_an_invalid_call_never_an_exception(text, error):
    parsed = parse_tool_calls(text, TOOLS)
    assert not parsed.calls
    (bad,) = parsed.invalid
    assert error in bad.error
    assert isinstance(bad.args, str) and bad.id.startswith("call_")


def test_mixed_valid_and_invalid_calls():
    parsed = parse_tool_calls('[{"name": "get_time", "arguments": {}}, {"name": "nope"}]', TOOLS)
    assert [c.name for c in parsed.calls] == ["get_time"]
    assert [c.name for c in parsed.invalid] == ["nope"]
