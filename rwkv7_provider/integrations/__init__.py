"""Integrations: how NeMo Guardrails and LangChain reach the runtime.

    settings.py    ProviderSettings: the parameters of a `models:` entry or a LangChain constructor
    client.py      RWKV7Client: runs one front end's requests on the shared engine (sampling or `choices` scoring)
    chat_format.py the RWKV World chat format, shared by both integrations
    guardrails/    the `rwkv7` NeMo Guardrails provider, its parameter checks and config pre-warming
    langchain/     RWKV7LLM, ChatRWKV7 and prompt-based tool calling
"""
