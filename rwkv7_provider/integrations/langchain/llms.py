"""`RWKV7LLM`: a local RWKV-7 checkpoint as a LangChain text LLM.

A thin class over the process-wide engine: instances on one checkpoint share weights and the
recurrent-state prefix cache with each other, with `ChatRWKV7` and with the guardrails provider, so a
prompt template reused across calls is prefilled once. Stop strings end generation as soon as they
appear, and call-time `temperature` / `max_tokens` / ... override the instance defaults.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import LLM
from langchain_core.outputs import Generation, GenerationChunk, LLMResult
from langchain_core.runnables import Runnable, RunnableConfig
from pydantic import ConfigDict, PrivateAttr, ValidationError

from ...errors import ParameterError
from ...runtime.options import GenerationOptions, format_errors
from ..client import Completion, RWKV7Client, check_checkpoint
from ..settings import ProviderSettings


def generation_info(done: Completion) -> dict[str, Any]:
    """Finish reason, usage, (for `choices`) the score and (with the `logprobs` option) the tokens'
    log-probabilities in OpenAI's shape, as LangChain metadata; shared with `ChatRWKV7`."""
    info: dict[str, Any] = {
        "finish_reason": done.finish_reason,
        "stop_sequence": done.stop_sequence,
        "usage": done.usage,
    }
    if done.probability is not None:
        info |= {"probability": done.probability, "scores": done.scores}
    if done.logprobs is not None:
        info["logprobs"] = {"content": [e.openai() for e in done.logprobs]}
    return info


def identifying_params(settings: ProviderSettings) -> dict[str, Any]:
    return {"model": settings.model, "choices": settings.choices, "block_threshold": settings.block_threshold} | {
        k: getattr(settings, k) for k in GenerationOptions.names()
    }


class LangChainSettings(ProviderSettings):
    """The fields of both LangChain classes (the provider settings) and the one client that runs their requests.

    Construction fails as the guardrails provider does: a `ParameterError` naming the bad parameter (not
    pydantic's raw `ValidationError`), and a `CheckpointError` for a checkpoint that does not exist.
    """

    model_config = ConfigDict(extra="forbid")

    _client: RWKV7Client | None = PrivateAttr(None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise ParameterError(format_errors(e)) from None
        check_checkpoint(self)

    @property
    def client(self) -> RWKV7Client:
        if self._client is None:
            self._client = RWKV7Client(self)
        return self._client


class RWKV7LLM(LLM, LangChainSettings):
    """Text completion with RWKV-7: the prompt goes to the model verbatim (no chat format).

    Example: `RWKV7LLM(model="path/to/checkpoint", temperature=0, max_tokens=64).invoke("The capital of France is")`.
    """

    model_config = ConfigDict(extra="forbid")

    @property
    def _llm_type(self) -> str:
        return "rwkv7"

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """With `return_exceptions`, each input gets its own outcome: LangChain's LLM batch runs all prompts as
        one call and returns the first failure (an empty prompt) for every input. Here each input is its own
        call, run concurrently (the engine batches them)."""
        if return_exceptions:
            return Runnable.batch(self, inputs, config, return_exceptions=True, **kwargs)
        return super().batch(inputs, config, **kwargs)

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[str]:
        """`batch`'s asyncio twin, per-input outcomes included."""
        if return_exceptions:
            return await Runnable.abatch(self, inputs, config, return_exceptions=True, **kwargs)
        return await super().abatch(inputs, config, **kwargs)

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return identifying_params(self)

    def _call(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return self.client.complete(prompt, stop, **kwargs).text

    async def _acall(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> str:
        return (await self.client.acomplete(prompt, stop, **kwargs)).text

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        """Like `LLM._generate`, plus finish reason and token usage, which `_call`'s plain string cannot carry."""
        return _result([self.client.complete(p, stop, **kwargs) for p in prompts])

    async def _agenerate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        return _result([await self.client.acomplete(p, stop, **kwargs) for p in prompts])

    def _stream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[GenerationChunk]:
        for item in self.client.complete_stream(prompt, stop, **kwargs):
            chunk = _chunk(item)
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        prompt: str,
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[GenerationChunk]:
        async for item in self.client.acomplete_stream(prompt, stop, **kwargs):
            chunk = _chunk(item)
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk


def _chunk(item: str | Completion) -> GenerationChunk:
    if isinstance(item, str):
        return GenerationChunk(text=item)
    return GenerationChunk(text="", generation_info=generation_info(item))


def _result(completions: list[Completion]) -> LLMResult:
    usage = {
        key: sum(c.usage[key] for c in completions)
        for key in ("input_tokens", "output_tokens", "total_tokens")
    }
    return LLMResult(
        generations=[[Generation(text=c.text, generation_info=generation_info(c))] for c in completions],
        llm_output={"token_usage": usage},
    )
