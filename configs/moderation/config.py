from rwkv7_provider.guardrails import init  # noqa: F401  registers `rwkv7`; init(app) pre-warms this config's prompts
