"""The runtime: everything between a prompt and the model.

    registry.py   get_engine: one engine per (checkpoint, dtype, device) in the process
    engine.py     Engine: prefill through the prefix cache, generate / stream / score, pre-warm; each request
                  written as a generator of steps
    scheduler.py  Scheduler: runs the steps of all concurrent requests as batched model calls (continuous
                  batching), cancellation, failure isolation
    decode_batch.py  DecodeBatch: the states of all generations in flight, one decode step for all (CUDA graphs)
    cache.py      PrefixCache: radix tree of token paths holding recurrent-state snapshots (LRU, persisted)
    options.py    GenerationOptions: THE schema of generation options, their defaults and checks
    settings.py   EngineSettings: THE schema of engine settings (loading, cache, batching), every rule checked
                  when they are built; get_engine and Engine take it whole
    sampling.py   Sampler: greedy / top-k / top-p / penalties, seeded, on the device (batched, no host sync)
    streaming.py  StopMatcher, StreamResult: deltas cut at stop strings, never half a character
    templates.py  the one `{{ var }}` parser, template prefixes and their stable tokens
    canonical.py  canonical_text: what a classifier should read of the characters a user typed
    structure.py  known templates: a classifier prompt's user spans scored as data (structure-aware scoring)
    results.py    Generation, ScoreResult

Nothing here imports an integration (NeMo Guardrails, LangChain) or the guard pipeline. Submodules are
imported explicitly (`from rwkv7_provider.runtime.engine import Engine`), so importing the package costs nothing.
"""
