"""From an OpenAI request to the prompt the model reads.

Chat messages are rendered in the World chat format (`integrations/chat_format.py`), tools described in the
system turn and earlier calls written as the model is asked to write them (`integrations/tool_format.py`):
the same prompt `ChatRWKV7` builds for the same conversation.

One exception, for classifier models (those with `choices`, e.g. the embedded guard): a conversation that is
a single user message is scored as that message's raw text. That is what NeMo's IORails sends for a
self-check rail (the rendered self-check prompt as one user message) and what the in-process provider
receives as a plain string prompt, and it is the text the guard was trained on; wrapping it in
`User: ... Assistant:` would score a prompt the guard never saw. Any other conversation is rendered in the
World format and the choices are scored after `Assistant:`.
"""

from __future__ import annotations

import json

from ..integrations.chat_format import canonical_role, content_text, render_chat
from ..integrations.tool_format import render_calls, render_tool_prompt, with_tool_prompt
from .schema import APIError, ChatCompletionRequest, ChatMessage


def chat_prompt(request: ChatCompletionRequest, classifier: bool) -> tuple[str, bool]:
    """(prompt, whether it is a World-format chat prompt); an unusable conversation is a 400."""
    try:
        messages = request.messages
        if classifier and len(messages) == 1 and canonical_role(messages[0].role) == "user" and not request.tools:
            return content_text(messages[0].content), False
        turns = _turns(messages)
        if request.tools:
            turns = with_tool_prompt(turns, render_tool_prompt(request.tools, request.tool_choice_name()))
        return render_chat(turns), True
    except (ValueError, KeyError, TypeError) as e:
        raise APIError(400, f"cannot use these messages: {e}", "messages") from None


def _turns(messages: list[ChatMessage]) -> list[tuple[str, str, str | None]]:
    turns: list[tuple[str, str, str | None]] = []
    call_names: dict[str, str] = {}  # tool_call_id -> tool name, for the tool results that answer them
    for m in messages:
        role = canonical_role(m.role)
        if role == "assistant" and m.tool_calls:
            calls = []
            for call in m.tool_calls:
                fn = call.get("function") or {}
                arguments = fn.get("arguments") or "{}"
                args = json.loads(arguments) if isinstance(arguments, str) else arguments
                calls.append({"name": fn["name"], "args": args})
                if call.get("id"):
                    call_names[call["id"]] = fn["name"]
            turns.append(("assistant", render_calls(calls), None))
        elif role == "tool":
            turns.append(("tool", content_text(m.content), m.name or call_names.get(m.tool_call_id or "")))
        else:
            turns.append((role, content_text(m.content), None))
    return turns
