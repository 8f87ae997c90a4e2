"""The `rwkv7` provider for NeMo Guardrails (0.24 `LLMModel` protocol) and its registration.

nemoguardrails has no entry-point discovery: `register()` is called by importing `rwkv7_provider.guardrails`,
which is what a guardrails config's `config.py` does. Every `models:` entry gets its own `RWKV7Model`, so the
constructor only validates parameters; weights and the prefix-state cache live in the process-wide engine of
the checkpoint and are loaded on first use (or by `prewarm_config` from the config's `init`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ...errors import missing_dependency

try:
    from nemoguardrails.context import llm_call_info_var
    from nemoguardrails.llm.frameworks import get_default_framework, get_framework
    from nemoguardrails.types import ChatMessage, LLMResponse, LLMResponseChunk, UsageInfo
except ModuleNotFoundError as e:  # an optional dependency: say which extra brings it
    raise missing_dependency(e, "guardrails", "the rwkv7 NeMo Guardrails provider") from e

from ..chat_format import content_text, render_chat
from ..client import Completion, RWKV7Client, check_checkpoint
from . import PROVIDER_NAME
from .parameters import parse_provider_parameters

log = logging.getLogger(__name__)

FINISH_REASONS = {"stop", "length", "tool_calls", "content_filter", "error"}


def _finish_reason(done: Completion) -> str:
    return done.finish_reason if done.finish_reason in FINISH_REASONS else "other"


def _usage(done: Completion) -> UsageInfo:
    return UsageInfo(**done.usage)


def _metadata(done: Completion) -> dict[str, Any] | None:
    """The score of a `choices` answer: how sure the guard was, for logging and thresholds."""
    if done.probability is None:
        return None
    return {"probability": done.probability, "scores": done.scores}


def _record(done: Completion, model: str, options: dict[str, Any]) -> None:
    """Put the call's details (and a `choices` score) in the rails log's `LLMCallInfo.raw_response`.

    That is where `options={"log": {"llm_calls": True}}` and tracing look; `LLMResponse.provider_metadata`
    does not reach the log for rail checks.
    """
    info = llm_call_info_var.get()
    if info is not None:
        info.raw_response = {
            "model": model,
            "finish_reason": done.finish_reason,
            "usage": done.usage,
            **{k: options[k] for k in ("temperature", "top_p", "max_tokens") if k in options},
            **(_metadata(done) or {}),
        }


class RWKV7Model:
    """A local RWKV-7 checkpoint as a NeMo Guardrails `LLMModel`.

    A string prompt (the `content:` form of prompts.yml, e.g. the self-check templates) goes to the model
    verbatim; a message list (the `messages:` form) is rendered in the World chat format and the answer ends
    at the end of the assistant's turn.
    """

    def __init__(self, model: str = "default", **parameters: Any) -> None:
        self.settings = parse_provider_parameters(model, parameters)
        check_checkpoint(self.settings)
        self.client = RWKV7Client(self.settings)

    @property
    def model_name(self) -> str:
        return self.settings.model

    @property
    def provider_name(self) -> str:
        return PROVIDER_NAME

    @property
    def provider_url(self) -> str | None:
        return None  # runs in-process: there is no endpoint

    def __repr__(self) -> str:
        return f"RWKV7Model(model={self.model_name!r})"

    @staticmethod
    def _render(prompt: str | list[ChatMessage | dict]) -> tuple[str, bool]:
        """The prompt text, and whether it is a chat (World format) prompt."""
        if isinstance(prompt, str):
            return prompt, False
        messages = [m if isinstance(m, ChatMessage) else ChatMessage.from_dict(m) for m in prompt]
        return render_chat((m.role.value, content_text(m.content), m.name) for m in messages), True

    async def generate_async(
        self, prompt: str | list[ChatMessage], *, stop: list[str] | None = None, **kwargs: Any
    ) -> LLMResponse:
        text, chat = self._render(prompt)
        done = await self.client.acomplete(text, stop, chat=chat, **kwargs)
        _record(done, self.model_name, kwargs)
        return LLMResponse(
            content=done.text,
            model=self.model_name,
            finish_reason=_finish_reason(done),
            stop_sequence=done.stop_sequence,
            usage=_usage(done),
            provider_metadata=_metadata(done),
        )

    async def stream_async(
        self, prompt: str | list[ChatMessage], *, stop: list[str] | None = None, **kwargs: Any
    ) -> AsyncIterator[LLMResponseChunk]:
        text, chat = self._render(prompt)
        async for item in self.client.acomplete_stream(text, stop, chat=chat, **kwargs):
            if isinstance(item, str):
                yield LLMResponseChunk(delta_content=item, model=self.model_name)
            else:
                _record(item, self.model_name, kwargs)
                yield LLMResponseChunk(
                    model=self.model_name,
                    finish_reason=_finish_reason(item),
                    usage=_usage(item),
                    provider_metadata=_metadata(item),
                )


def register() -> None:
    """Register `rwkv7` (and `rwkv7_no_main_model`, the refusing main model of rails-only configs) with
    nemoguardrails' default framework, and `rwkv7` with its LangChain framework when that is the active one
    (`NEMOGUARDRAILS_LLM_FRAMEWORK=langchain`); idempotent.

    Only then are the LangChain classes and that framework's provider table (which imports all of
    langchain-community) loaded, so default-framework users never pay for them. The LangChain framework
    needs `langchain` and `langchain-community`. There, `mode: chat` (the default) builds a `ChatRWKV7`,
    which wraps a string prompt in a World-format user turn: give self-check models `mode: text`
    (`RWKV7LLM`) so their prompts reach the model verbatim, as the guard was trained.
    """
    from .no_main_model import NO_MAIN_MODEL, NoMainModel, langchain_class

    get_framework("default").register_provider(PROVIDER_NAME, RWKV7Model)
    get_framework("default").register_provider(NO_MAIN_MODEL, NoMainModel)
    if get_default_framework() != "langchain":
        return
    from ..langchain.chat_models import ChatRWKV7
    from ..langchain.llms import RWKV7LLM

    langchain = get_framework("langchain")
    langchain.register_provider(PROVIDER_NAME, ChatRWKV7)
    langchain.register_llm_provider(PROVIDER_NAME, RWKV7LLM)
    langchain.register_provider(NO_MAIN_MODEL, langchain_class())
