"""`rwkv7_no_main_model`: the main model of a rails-only config, which answers with a refusal that says so.

Why it exists: a NeMo Guardrails config without a `type: main` model is not "rails only" everywhere. Asked
for a full generation (no `options={"rails": ["input"]}`), `nemoguardrails server` injects a main model on the
`openai` engine, and the user's message goes to a hosted model the user never configured. The shipped
moderation configs name this stand-in as their main model instead: such a request gets this refusal,
computed locally, and no text leaves the machine. Registered with the `rwkv7` provider (importing
`rwkv7_provider.guardrails`); it loads no model and accepts (and ignores) any parameters, so the
`model` / `base_url` that NeMo's server or IORails put on a main model do not break it.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

from nemoguardrails.types import LLMResponse, LLMResponseChunk

NO_MAIN_MODEL = "rwkv7_no_main_model"
REFUSAL = (
    "This guardrails configuration has no main model, so it cannot generate an answer: it only runs its rails "
    "(call it with options={'rails': ['input']}), or add a `type: main` model to its config.yml."
)


class NoMainModel:
    """A NeMo Guardrails `LLMModel` that refuses every generation, naming the missing main model."""

    def __init__(self, model: str = "none", **parameters: Any) -> None:
        self._model = model

    @property
    def model_name(self) -> str:
        return self._model

    @property
    def provider_name(self) -> str:
        return NO_MAIN_MODEL

    @property
    def provider_url(self) -> str | None:
        return None

    async def generate_async(self, prompt: Any, *, stop: list[str] | None = None, **kwargs: Any) -> LLMResponse:
        return LLMResponse(content=REFUSAL, model=self._model, finish_reason="stop")

    async def stream_async(self, prompt: Any, *, stop: list[str] | None = None, **kwargs: Any
                           ) -> AsyncIterator[LLMResponseChunk]:
        yield LLMResponseChunk(delta_content=REFUSAL, model=self._model, finish_reason="stop")


@functools.cache
def langchain_class() -> type:
    """The same stand-in as a LangChain chat model, for nemoguardrails' LangChain framework (built on demand:
    default-framework users never import LangChain)."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from pydantic import ConfigDict

    class NoMainChatModel(BaseChatModel):
        model_config = ConfigDict(extra="ignore")
        model: str = "none"

        @property
        def _llm_type(self) -> str:
            return NO_MAIN_MODEL

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return ChatResult(generations=[ChatGeneration(message=AIMessage(REFUSAL))])

    return NoMainChatModel
