"""The RWKV World chat format, shared by the guardrails provider and the LangChain chat model.

World / G1 checkpoints were trained on `System: ...`, `User: ...` and `Assistant: ...` turns separated
by one blank line, so a blank line inside a message would read as the end of its turn: runs of
newlines inside a message are collapsed to one. A prompt ends with `Assistant:` (no trailing space:
the model's first token carries it), and generation stops at the next blank line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ..errors import InputError

TURN_SEPARATOR = "\n\n"
CHAT_STOP = TURN_SEPARATOR  # the end of the assistant's turn
ROLE_PREFIX = {"system": "System", "user": "User", "assistant": "Assistant"}

# Role names used by LangChain, OpenAI-style dicts and NeMo Guardrails, mapped to the three World roles.
ROLE_ALIASES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "tool": "tool",
}


def normalize_text(text: str) -> str:
    """Strip, unify line endings and collapse newline runs so a message never ends its turn early."""
    return re.sub(r"\n{2,}", "\n", text.replace("\r\n", "\n").replace("\r", "\n")).strip()


def content_text(content: str | list | None) -> str:
    """Text of a message content: a string, or a list of content parts of which only text is supported."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(part.get("text", ""))
        else:
            kind = part.get("type") if isinstance(part, dict) else type(part).__name__
            raise InputError(f"RWKV-7 chat models take text only; got a {kind!r} content part")
    return "\n".join(parts)


def canonical_role(role: str) -> str:
    """One of system / user / assistant / tool, or an InputError naming the accepted roles."""
    key = getattr(role, "value", role)
    try:
        return ROLE_ALIASES[str(key).lower()]
    except KeyError:
        raise InputError(f"unknown chat role {key!r}; expected one of {sorted(ROLE_ALIASES)}") from None


def render_turn(role: str, text: str, name: str | None = None) -> str:
    """One turn without its separator. Tool results have no World role: they come back as a user turn."""
    role = canonical_role(role)
    text = normalize_text(text)
    if role == "tool":
        role, text = "user", f"Result of tool {name or 'call'}: {text}"
    return f"{ROLE_PREFIX[role]}: {text}" if text else f"{ROLE_PREFIX[role]}:"


def render_chat(messages: Iterable[tuple[str, str] | tuple[str, str, str | None]]) -> str:
    """The World-format prompt for (role, text[, name]) turns, ending where the assistant speaks next.

    A trailing assistant turn is left open (no separator, no new `Assistant:`), so the model continues it.
    """
    turns = [tuple(m) for m in messages]
    if not turns:
        raise InputError("cannot render an empty conversation")
    rendered = [render_turn(*t) for t in turns]
    if canonical_role(turns[-1][0]) == "assistant":
        return TURN_SEPARATOR.join(rendered)
    return TURN_SEPARATOR.join([*rendered, "Assistant:"])


def clean_reply(text: str) -> str:
    """An assistant answer without the space after `Assistant:` and without trailing blank lines."""
    return text.strip()
