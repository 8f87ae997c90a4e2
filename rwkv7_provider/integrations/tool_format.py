"""Tool calling for a model without a tool-call API: tools described in the system turn, JSON answers parsed.

Shared by `ChatRWKV7` (LangChain) and the OpenAI-compatible server, so both ask for and read tool calls the
same way; nothing here imports LangChain.

The model is told to make a tool call by answering with only a JSON object,
`{"name": ..., "arguments": {...}}` (or a JSON list of them). Earlier calls in the conversation are
rendered in that same shape, so a multi-step agent shows the model its own convention. Parsing never
raises: text that is not a tool call stays text, and a broken or unknown call becomes an `InvalidCall`
that says what was wrong (LangChain's `invalid_tool_calls`).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import ParameterError

ARGUMENT_KEYS = ("arguments", "args", "parameters")
FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
CALL_START = re.compile(r'[\[{]\s*\{?\s*"name"\s*:')


@dataclass(frozen=True)
class ToolCall:
    name: str
    args: dict[str, Any]
    id: str


@dataclass(frozen=True)
class InvalidCall:
    name: str | None
    args: str
    id: str
    error: str


@dataclass
class ParsedOutput:
    """What a completion means: plain text, tool calls, or calls that could not be used."""

    text: str
    calls: list[ToolCall] = field(default_factory=list)
    invalid: list[InvalidCall] = field(default_factory=list)


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:16]}"


def tool_name(schema: dict[str, Any]) -> str:
    """The name of an OpenAI-format tool (`{"type": "function", "function": {...}}`) or a bare function dict."""
    return schema.get("function", schema)["name"]


def render_tool_prompt(tools: Sequence[dict[str, Any]], tool_choice: str | None = None) -> str:
    """System-turn text that lists the tools (OpenAI function format) and the answer convention.

    `tool_choice`: None / "auto" lets the model choose, "any" / "required" forces some call, a tool's name
    forces that tool, "none" lists the tools but forbids calling them.
    """
    lines = ["You can use these tools. Each is described as JSON: its name, what it does and its parameters."]
    for schema in tools:
        fn = schema.get("function", schema)
        lines.append(json.dumps({k: fn[k] for k in ("name", "description", "parameters") if k in fn}))
    lines.append(
        'To use a tool, answer with only a JSON object: {"name": "<tool name>", "arguments": {<parameter values>}}. '
        "To use several tools at once, answer with a JSON list of such objects."
    )
    names = [tool_name(t) for t in tools]
    if tool_choice in (None, "auto"):
        lines.append("If no tool is needed, answer the user directly in plain text.")
    elif tool_choice in ("any", "required"):
        lines.append("You must answer with a tool call.")
    elif tool_choice == "none":
        lines.append("Do not use any tool now: answer in plain text.")
    elif tool_choice in names:
        lines.append(f"You must answer with a call of the tool {tool_choice!r}.")
    else:
        raise ParameterError(
            f"tool_choice {tool_choice!r} is not one of the bound tools {names} or auto/any/required/none"
        )
    return "\n".join(lines)


def with_tool_prompt(
    turns: list[tuple[str, str, str | None]], tool_prompt: str | None
) -> list[tuple[str, str, str | None]]:
    """(role, text, name) turns with the tool description joined to the leading system turn (or as one)."""
    if not tool_prompt:
        return turns
    if turns and turns[0][0] == "system":
        return [("system", f"{turns[0][1]}\n{tool_prompt}", None), *turns[1:]]
    return [("system", tool_prompt, None), *turns]


def render_calls(calls: Sequence[dict[str, Any]]) -> str:
    """Earlier tool calls (`{"name", "args"}` dicts) written the way the model is asked to write them."""
    objects = [{"name": c["name"], "arguments": c.get("args", {})} for c in calls]
    return json.dumps(objects[0] if len(objects) == 1 else objects)


def _call_json(text: str) -> str | None:
    """The part of a completion that should be a tool call, or None when the answer is plain text."""
    stripped = text.strip()
    fenced = FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1)
    if stripped.startswith(("{", "[")):
        return stripped
    found = CALL_START.search(stripped)
    return stripped[found.start() :] if found else None


def _one_call(obj: Any, allowed: set[str]) -> ToolCall | InvalidCall:
    call_id = new_call_id()
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return InvalidCall(
            None, json.dumps(obj), call_id, 'a tool call must be a JSON object with a string "name"'
        )
    name = obj["name"]
    key = next((k for k in ARGUMENT_KEYS if k in obj), None)
    args = obj[key] if key else {}
    if isinstance(args, str):  # some models double-encode the arguments
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    if not isinstance(args, dict):
        return InvalidCall(
            name, json.dumps(args), call_id, f'the "arguments" of {name!r} must be a JSON object'
        )
    if name not in allowed:
        return InvalidCall(
            name, json.dumps(args), call_id, f"unknown tool {name!r}; available: {sorted(allowed)}"
        )
    return ToolCall(name, args, call_id)


def parse_tool_calls(text: str, tools: Sequence[dict[str, Any]], *, required: bool = False) -> ParsedOutput:
    """Interpret a completion given the bound tools; `required` makes a plain-text answer an invalid call."""
    allowed = {tool_name(t) for t in tools}
    candidate = _call_json(text)
    if candidate is None:
        if required:
            return ParsedOutput(
                text, invalid=[InvalidCall(None, text, new_call_id(), "expected a tool call, got text")]
            )
        return ParsedOutput(text)
    try:
        value, _ = json.JSONDecoder().raw_decode(candidate)
    except json.JSONDecodeError as e:
        return ParsedOutput(
            "", invalid=[InvalidCall(None, candidate, new_call_id(), f"malformed tool call JSON: {e}")]
        )
    items = value if isinstance(value, list) else [value]
    if not items:
        return ParsedOutput(
            "", invalid=[InvalidCall(None, candidate, new_call_id(), "empty list of tool calls")]
        )
    parsed = ParsedOutput("")
    for item in items:
        call = _one_call(item, allowed)
        (parsed.calls if isinstance(call, ToolCall) else parsed.invalid).append(call)
    return parsed
