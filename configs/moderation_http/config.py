from rwkv7_provider.guardrails import init  # noqa: F401  registers `rwkv7_no_main_model` for LLMRails / nemoguardrails server
