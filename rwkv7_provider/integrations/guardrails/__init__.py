"""NeMo Guardrails integration: the `rwkv7` provider.

    provider.py    RWKV7Model (the LLMModel protocol of nemoguardrails 0.24) and register()
    parameters.py  the checks a `models:` entry's parameters get when the config loads
    prewarm.py     prewarm_config / init_config: a config's prompts prefilled into the state cache at start-up
    no_main_model.py  `rwkv7_no_main_model`: the refusing main model of rails-only configs (privacy)

Users import `rwkv7_provider.guardrails`, which registers the provider.
"""

PROVIDER_NAME = "rwkv7"
