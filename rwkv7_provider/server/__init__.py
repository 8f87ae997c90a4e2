"""`rwkv7-provider serve`: the engine as a local OpenAI-compatible HTTP service.

    config.py     ServerConfig / ServedModel: the served models (CLI arguments or YAML) and the limits
    schema.py     the OpenAI request bodies and the OpenAI error shape
    prompting.py  a chat request -> the prompt the model reads (World format, tools; raw text for a classifier)
    responses.py  OpenAI response objects and stream chunks from the client's Completions
    limits.py     API key, body size, admission (429), per-request timeout and disconnect cancellation
    metrics.py    Prometheus metrics
    app.py        create_app(config) -> FastAPI
    serve.py      the `serve` subcommand (uvicorn; with --replicas, Ray Serve)
    affinity.py   prefix-affinity routing policy: which replica holds a prompt's prefix (no Ray import)
    ray_router.py PrefixAffinityRouter, the policy as a Ray Serve request router
    ray_app.py    the app as Ray Serve replicas behind one endpoint (the [ray] extra)

Nothing here is imported by the rest of the package: the server is a front end like the guardrails provider
and the LangChain classes, over the same `RWKV7Client` and process-wide engines.
"""
