"""LangChain integration: `RWKV7LLM` (text, llms.py) and `ChatRWKV7` (chat with prompt-based tool calling,
chat_models.py; the tool format is ../tool_format.py, shared with the server). Both are thin classes over one `RWKV7Client` and share the
process-wide engine, so instances on one checkpoint share weights and the prefix state cache."""

from ...errors import missing_dependency

try:
    import langchain_core  # noqa: F401
except ModuleNotFoundError as e:  # an optional dependency: say which extra brings it
    raise missing_dependency(e, "langchain", "RWKV7LLM / ChatRWKV7") from e
