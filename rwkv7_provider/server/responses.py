"""OpenAI response objects (chat completions, completions, their stream chunks, moderations) from the
client's `Completion`s.

A classifier's answer (a model with `choices`) carries its probability twice: in `logprobs` when asked for
(one entry, the answer, with every choice among its `top_logprobs`; log-probabilities normalised over the
choices, so exp(logprob) is the probability the in-process provider reports), and always in the extra field
`classification` of each choice: `{"answer", "probability" (of the answer), "probabilities" (per choice)}`.
A generation's `logprobs` list its tokens under the model's own distribution (the engine's `logprobs`
option); a stream sends them all in its last chunk, which clients that join chunks' lists read as usual.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from ..integrations.client import Completion
from ..integrations.tool_format import parse_tool_calls

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(done: list[Completion]) -> dict[str, Any]:
    """Token counts; `prompt_tokens_details.cached_tokens` are the prompt tokens served from the state cache."""
    prompt = sum(d.prompt_tokens for d in done)
    completion = sum(d.completion_tokens for d in done)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(d.cached_tokens for d in done)},
    }


def probabilities(done: Completion) -> dict[str, float]:
    """Each choice's probability, normalised over the choices."""
    scores = done.scores or {}
    top = max(scores.values())
    weights = {c: math.exp(lp - top) for c, lp in scores.items()}
    total = sum(weights.values())
    return {c: w / total for c, w in weights.items()}


def classification(done: Completion) -> dict[str, Any]:
    return {"answer": done.text, "probability": done.probability, "probabilities": probabilities(done)}


def _chat_logprobs(done: Completion, top: int | None) -> dict[str, Any]:
    """A classifier's answer as one entry, every choice among its alternatives; a generation's tokens."""
    if done.logprobs is not None:
        return {"content": [e.openai() for e in done.logprobs]}
    ranked = sorted(probabilities(done).items(), key=lambda kv: -kv[1])

    def entry(choice: str, p: float) -> dict[str, Any]:
        return {"token": choice, "logprob": math.log(p) if p > 0 else -9999.0, "bytes": list(choice.encode())}

    answer = entry(done.text, dict(ranked)[done.text])
    answer["top_logprobs"] = [entry(c, p) for c, p in ranked[: len(ranked) if top is None else top]]
    return {"content": [answer]}


def _completion_logprobs(done: Completion, top: int) -> dict[str, Any]:
    """The legacy completions shape: parallel lists (tokens, their log-probabilities, alternatives, offsets)."""
    if done.logprobs is not None:
        return {
            "tokens": [e.token for e in done.logprobs],
            "token_logprobs": [e.logprob for e in done.logprobs],
            "top_logprobs": [{text: lp for text, _, lp in e.top} for e in done.logprobs],
            "text_offset": [e.offset for e in done.logprobs],
        }
    probs = probabilities(done)
    ranked = sorted(probs.items(), key=lambda kv: -kv[1])[:top]
    return {
        "tokens": [done.text],
        "token_logprobs": [math.log(probs[done.text])],
        "top_logprobs": [{c: math.log(p) for c, p in ranked}],
        "text_offset": [0],
    }


def finish_reason(done: Completion) -> str:
    return done.finish_reason if done.finish_reason in FINISH_REASONS else "stop"


def chat_message(done: Completion, tools: list[dict[str, Any]] | None, required: bool) -> tuple[dict, str]:
    """(the assistant message, finish_reason): tool calls parsed from the text when tools are bound."""
    if tools:
        parsed = parse_tool_calls(done.text, tools, required=required)
        if parsed.calls:
            calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.args)}}
                     for c in parsed.calls]
            return {"role": "assistant", "content": None, "tool_calls": calls}, "tool_calls"
    return {"role": "assistant", "content": done.text}, finish_reason(done)


def chat_choice(index: int, done: Completion, request: Any) -> dict[str, Any]:
    message, finish = chat_message(done, request.tools, request.tool_choice_name() not in (None, "auto", "none"))
    choice: dict[str, Any] = {"index": index, "message": message, "finish_reason": finish, "logprobs": None}
    if done.scores is not None:
        choice["classification"] = classification(done)
    if request.logprobs:
        choice["logprobs"] = _chat_logprobs(done, request.top_logprobs)
    return choice


def completion_choice(index: int, done: Completion, logprobs: int | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": index, "text": done.text, "finish_reason": finish_reason(done), "logprobs": None}
    if done.scores is not None:
        choice["classification"] = classification(done)
    if logprobs is not None:
        choice["logprobs"] = _completion_logprobs(done, logprobs)
    return choice


class ChatFrames:
    """The chunks of a streamed chat completion: the role first, then content deltas, then the finish
    reason (with tools bound, the whole answer comes in the last chunk: a tool call is parsed from all of it)."""

    kind, prefix = "chat.completion.chunk", "chatcmpl"

    def __init__(self, request: Any) -> None:
        self.request = request
        self.opening = [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]

    def delta(self, text: str) -> list[dict] | None:
        return None if self.request.tools else [{"index": 0, "delta": {"content": text}, "finish_reason": None}]

    def closing(self, done: Completion) -> list[dict]:
        full = chat_choice(0, done, self.request)
        choice: dict[str, Any] = {"index": 0, "delta": {}, "finish_reason": full["finish_reason"],
                                  "logprobs": full["logprobs"]}
        if self.request.tools:
            calls = full["message"].get("tool_calls")
            choice["delta"] = ({"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]} if calls
                               else {"content": done.text})
        if "classification" in full:
            choice["classification"] = full["classification"]
        return [choice]


class CompletionFrames:
    """The chunks of a streamed text completion: text deltas, then the finish reason."""

    kind, prefix, opening = "text_completion", "cmpl", None

    def __init__(self, logprobs: int | None) -> None:
        self.logprobs = logprobs

    def delta(self, text: str) -> list[dict]:
        return [{"index": 0, "text": text, "finish_reason": None, "logprobs": None}]

    def closing(self, done: Completion) -> list[dict]:
        return [completion_choice(0, done, self.logprobs) | {"text": ""}]


def envelope(kind: str, rid: str, model: str, choices: list[dict], done: list[Completion]) -> dict[str, Any]:
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices,
            "usage": usage(done)}


def chunk(kind: str, rid: str, model: str, choices: list[dict], usage_: dict | None = None) -> str:
    """One server-sent event."""
    body: dict[str, Any] = {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return f"data: {json.dumps(body)}\n\n"


def error_event(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body)}\n\n"


DONE_EVENT = "data: [DONE]\n\n"


def moderation_result(scored: dict[str, Completion], block: str) -> dict[str, Any]:
    """One input's result: a category per policy prompt, flagged when the guard's answer there is `block`."""
    categories = {name: done.text == block for name, done in scored.items()}
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": {name: probabilities(done)[block] for name, done in scored.items()},
        "category_applied_input_types": {name: ["text"] for name in scored},
    }
