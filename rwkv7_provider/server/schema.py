"""The OpenAI request bodies the server accepts, and its errors in OpenAI's shape.

Requests are validated strictly, as OpenAI does: an unknown field is a 400 ("Unrecognized request argument"),
not silently ignored, so a client that thinks it set something learns that it did not. Fields OpenAI defines
that change nothing for a local model (`user`, `metadata`, `store`, ...) are accepted; fields whose feature
is not implemented are accepted only at their neutral value and otherwise fail with a message naming them.
`top_k` and `penalty_decay` are extensions (RWKV sampling options), as in other local servers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class APIError(Exception):
    """An error to answer in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
             504: "timeout_error"}

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        kind = self.TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    penalty_decay: float | None = None
    max_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @model_validator(mode="after")
    def _neutral(self) -> _Request:
        if self.logit_bias:
            raise ValueError("logit_bias is not supported")
        return self

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    def generation_overrides(self) -> dict[str, Any]:
        """The request's sampling options, as the provider's call-time overrides (None: the model's default)."""
        names = ("temperature", "top_p", "top_k", "presence_penalty", "frequency_penalty", "penalty_decay",
                 "max_tokens", "seed")
        overrides = {k: getattr(self, k) for k in names if getattr(self, k) is not None}
        if (count := self.logprobs_count()) is not None:
            overrides["logprobs"] = count
        return overrides

    def logprobs_count(self) -> int | None:
        """The most likely alternatives to report per generated token when log-probabilities are asked for."""
        return None


class ChatMessage(BaseModel):
    """An OpenAI chat message. Extra fields (`refusal`, `annotations`, ... echoed back by clients) are ignored."""

    model_config = ConfigDict(extra="ignore")

    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        if self.max_completion_tokens is not None:
            if self.max_tokens is not None and self.max_tokens != self.max_completion_tokens:
                raise ValueError("max_tokens and max_completion_tokens disagree: give one")
            self.max_tokens = self.max_completion_tokens
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("response_format: only {'type': 'text'} is supported (use `tools` for JSON)")
        if self.modalities and self.modalities != ["text"]:
            raise ValueError("modalities: RWKV-7 models produce text only")
        return self

    def logprobs_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def tool_choice_name(self) -> str | None:
        """`tool_choice` as the tool format's string: auto / none / required / a tool's name."""
        choice = self.tool_choice
        if isinstance(choice, dict):
            return (choice.get("function") or {}).get("name")
        return choice


class CompletionRequest(_Request):
    prompt: str | list[str]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: Literal[False] = False
    suffix: None = None
    best_of: Literal[1] | None = None

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def logprobs_count(self) -> int | None:
        return self.logprobs


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: str | list[str] | list[dict[str, Any]]
    model: str | None = None

    def texts(self) -> list[str]:
        if isinstance(self.input, str):
            return [self.input]
        texts = []
        for item in self.input:
            if isinstance(item, str):
                texts.append(item)
            elif item.get("type") == "text" and isinstance(item.get("text"), str):
                texts.append(item["text"])
            else:
                raise APIError(400, "moderation input parts must be text ({'type': 'text', 'text': ...})", "input")
        return texts


def validation_error(errors: list[dict[str, Any]]) -> APIError:
    """A request-validation failure as OpenAI words it (first error; `param` names the field)."""
    err = errors[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    param = ".".join(loc) or None
    kind = err.get("type", "")
    if kind == "json_invalid":
        return APIError(400, f"the request body is not valid JSON: {err.get('msg')}", None, "invalid_json")
    if kind == "extra_forbidden":
        return APIError(400, f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if kind == "missing":
        return APIError(400, f"missing required parameter: {param}", param, "missing_required_parameter")
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return APIError(400, f"invalid value for {param}: {message}" if param else message, param, "invalid_value")
