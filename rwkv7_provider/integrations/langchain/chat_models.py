"""`ChatRWKV7`: a local RWKV-7 checkpoint as a LangChain chat model, with prompt-based tool calling.

Messages are rendered in the World chat format (`System:` / `User:` / `Assistant:` turns) and the answer
ends with the assistant's turn. RWKV-7 has no tool-call API, so `bind_tools` describes the tools in the
system turn and the model's JSON answer is parsed into `AIMessage.tool_calls` (see `integrations/tool_format.py`); output
that cannot be used becomes an `invalid_tool_calls` entry, never an exception.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from operator import itemgetter
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict

from ...errors import InputError, ParameterError
from ..chat_format import content_text, render_chat
from ..client import Completion
from .llms import LangChainSettings, generation_info, identifying_params
from ..tool_format import parse_tool_calls, render_calls, render_tool_prompt, tool_name, with_tool_prompt


def _text(message: BaseMessage) -> str:
    return content_text(message.content)


def render_messages(messages: Sequence[BaseMessage], tool_prompt: str | None = None) -> str:
    """The World-format prompt; the tool description joins the leading system turn (or becomes one)."""
    turns: list[tuple[str, str, str | None]] = []
    call_names: dict[str, str] = {}
    for m in messages:
        if isinstance(m, SystemMessage):
            turns.append(("system", _text(m), None))
        elif isinstance(m, HumanMessage):
            turns.append(("user", _text(m), None))
        elif isinstance(m, AIMessage):
            call_names |= {c["id"]: c["name"] for c in m.tool_calls if c.get("id")}
            turns.append(("assistant", render_calls(m.tool_calls) if m.tool_calls else _text(m), None))
        elif isinstance(m, ToolMessage):
            turns.append(("tool", _text(m), m.name or call_names.get(m.tool_call_id)))
        elif isinstance(m, FunctionMessage):
            turns.append(("tool", _text(m), m.name))
        elif isinstance(m, ChatMessage):
            turns.append((m.role, _text(m), None))
        else:
            raise InputError(f"ChatRWKV7 cannot render a {type(m).__name__}")
    return render_chat(with_tool_prompt(turns, tool_prompt))


def _usage_metadata(done: Completion) -> UsageMetadata:
    return UsageMetadata(
        input_tokens=done.prompt_tokens,
        output_tokens=done.completion_tokens,
        total_tokens=done.prompt_tokens + done.completion_tokens,
        input_token_details={"cache_read": done.cached_tokens},
    )


def _tool_choice_name(tool_choice: Any) -> str | None:
    """LangChain's spellings of tool_choice (True, dicts) reduced to None / auto / any / none / a tool name."""
    if tool_choice is True:
        return "any"
    if tool_choice in (None, False):
        return None
    if isinstance(tool_choice, dict):
        return tool_name(tool_choice)
    return str(tool_choice)


class ChatRWKV7(BaseChatModel, LangChainSettings):
    """Chat with RWKV-7 World / G1 models (system / user / assistant turns), streaming and tool calling.

    Example: `ChatRWKV7(model="path/to/rwkv7-g1", temperature=0.3).invoke("Hello")`.
    """

    model_config = ConfigDict(extra="forbid")

    streaming: bool = False
    """Run `invoke` through the streaming path too, so callbacks get `on_llm_new_token` for every delta."""

    @property
    def _llm_type(self) -> str:
        return "rwkv7-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return identifying_params(self)

    # Request plumbing: `tools` / `tool_choice` arrive as call kwargs from `bind_tools`.

    @staticmethod
    def _prepare(
        messages: list[BaseMessage], kwargs: dict[str, Any]
    ) -> tuple[str, list[dict] | None, str | None]:
        tools = kwargs.pop("tools", None) or None
        choice = _tool_choice_name(kwargs.pop("tool_choice", None))
        prompt = render_messages(messages, render_tool_prompt(tools, choice) if tools else None)
        return prompt, tools, choice

    def _message(self, done: Completion, tools: list[dict] | None, choice: str | None) -> AIMessage:
        metadata = {"model_name": self.model, **generation_info(done)}
        usage = _usage_metadata(done)
        if not tools or choice == "none":
            return AIMessage(content=done.text, response_metadata=metadata, usage_metadata=usage)
        parsed = parse_tool_calls(done.text, tools, required=choice not in (None, "auto"))
        if parsed.calls:
            metadata["finish_reason"] = "tool_calls"
        return AIMessage(
            content=parsed.text,
            tool_calls=[tool_call(name=c.name, args=c.args, id=c.id) for c in parsed.calls],
            invalid_tool_calls=[
                invalid_tool_call(name=c.name, args=c.args, id=c.id, error=c.error) for c in parsed.invalid
            ],
            response_metadata=metadata,
            usage_metadata=usage,
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, tools, choice = self._prepare(messages, kwargs)
        done = self.client.complete(prompt, stop, chat=True, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=self._message(done, tools, choice))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        prompt, tools, choice = self._prepare(messages, kwargs)
        done = await self.client.acomplete(prompt, stop, chat=True, **kwargs)
        return ChatResult(generations=[ChatGeneration(message=self._message(done, tools, choice))])

    def _chunk(
        self, item: str | Completion, tools: list[dict] | None, choice: str | None
    ) -> ChatGenerationChunk | None:
        """A stream item as a chunk. With tools bound nothing is streamed: a tool call is only known once its
        JSON is complete, so the last chunk carries the whole parsed answer."""
        streamed = not tools or choice == "none"
        if isinstance(item, str):
            return ChatGenerationChunk(message=AIMessageChunk(content=item)) if streamed else None
        message = self._message(item, tools, choice)
        return ChatGenerationChunk(
            message=AIMessageChunk(
                content="" if streamed else message.content,
                tool_calls=message.tool_calls,
                invalid_tool_calls=message.invalid_tool_calls,
                response_metadata=message.response_metadata,
                usage_metadata=message.usage_metadata,
            )
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        prompt, tools, choice = self._prepare(messages, kwargs)
        for item in self.client.complete_stream(prompt, stop, chat=True, **kwargs):
            chunk = self._chunk(item, tools, choice)
            if chunk is None:
                continue
            if run_manager and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        prompt, tools, choice = self._prepare(messages, kwargs)
        async for item in self.client.acomplete_stream(prompt, stop, chat=True, **kwargs):
            chunk = self._chunk(item, tools, choice)
            if chunk is None:
                continue
            if run_manager and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable | BaseTool],
        *,
        tool_choice: dict | str | bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools (LangChain tools, pydantic models, functions or OpenAI tool dicts) for prompt-based calling.

        `tool_choice`: "auto" (default), "any" / "required" / True (must call), a tool name, or "none".
        """
        formatted = [convert_to_openai_tool(t) for t in tools]
        render_tool_prompt(
            formatted, _tool_choice_name(tool_choice)
        )  # reject a bad tool_choice now, not per call
        return super().bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def with_structured_output(
        self, schema: dict | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict | Any]:
        """Answers as `schema` via a forced tool call; an answer that is not that call raises a parse error.

        (LangChain's default would return None for it.) With `include_raw=True` the error is returned as
        `parsing_error` next to the raw message instead.
        """
        kwargs.pop("method", None)
        kwargs.pop("strict", None)
        if kwargs:
            raise ParameterError(f"unsupported arguments for with_structured_output: {sorted(kwargs)}")
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm = self.bind_tools(
            [schema],
            tool_choice=name,
            ls_structured_output_format={"kwargs": {"method": "function_calling"}, "schema": schema},
        )
        if isinstance(schema, type) and is_basemodel_subclass(schema):
            parser: Runnable = PydanticToolsParser(tools=[schema], first_tool_only=True)
        else:
            parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        parser = RunnableLambda(_require_tool_call) | parser
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks([fallback], exception_key="parsing_error")


def _require_tool_call(message: AIMessage) -> AIMessage:
    if message.tool_calls:
        return message
    if message.invalid_tool_calls:
        bad = message.invalid_tool_calls[0]
        raise OutputParserException(
            f"the model's answer is not a usable tool call: {bad['error']}", llm_output=bad["args"] or ""
        )
    raise OutputParserException(
        "the model answered in text instead of a tool call", llm_output=_text(message)
    )
