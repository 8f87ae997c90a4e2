"""The runtime: everything between a prompt and the model.

    registry.py   get_engine: one engine per (checkpoint, dtype, device) in the process
    engine.py     Engine: prefill through the prefix cache, generate / stream / score, pre-warm
    cache.py      PrefixCache: radix tree of token paths holding recurrent-state snapshots (LRU, persisted)
    options.py    GenerationOptions: THE schema of generation options, their defaults and checks; dtype names
    sampling.py   Sampler: greedy / top-k / top-p / penalties, seeded
    streaming.py  StopMatcher, StreamResult: deltas cut at stop strings, never half a character
    templates.py  the one `{{ var }}` parser, template prefixes and their stable tokens
    results.py    Generation, ScoreResult

Nothing here imports an integration (NeMo Guardrails, LangChain) or the guard pipeline. Submodules are
imported explicitly (`from rwkv7_provider.runtime.engine import Engine`), so importing the package costs nothing.
"""
