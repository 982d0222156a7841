"""kit engine double: a stand-in for vLLM's OpenAI-compatible server (`vllm serve ...`).

FOR KIT INTEGRATION TESTS ONLY. THIS IS NOT vLLM. It loads no model and needs no GPU: it parses
vLLM's serve flags, validates the GPU plan and the model folder the way vLLM does, prints
vLLM-like logs (with vLLM's real error texts for each failure cause), keeps its port closed while
"loading", then serves a deterministic OpenAI-compatible API on an asyncio HTTP/1.1 server.

Python 3.11+ standard library only. The image installs this package with /usr/local/bin/vllm
linked to its `__main__.py`. Environment knobs: engine_double/README.md and `env.ENV_KNOBS`.

Modules, in the order a request meets them:
    __main__      the `vllm` command (runs as `python engine_double/vllm_double` too)
    cli           vLLM's command line per version, then the server
    env           environment knobs, the imitated version, the visible GPUs
    config        the simulated engine configuration (flags, model folder, environment)
    server        the process: startup checks in vLLM's order, loading, serving, crash, stop
    multinode     vLLM's native multi-node launch: nodes join the head, a lost node is fatal
    logs          vLLM's log lines and prefixes
    failures      vLLM's tracebacks for each failure cause
    http_server   HTTP/1.1 on asyncio streams: requests, responses, SSE, connections
    api           the routes: auth, 503 mode, health, version, models, metrics
    generation    chat and text completions, plain and streamed
    pooling       embeddings, rerank, score
    errors        error JSON per version, request validation errors
    outputs       the deterministic "model": words as tokens, relevance, embeddings
    metrics       the counters behind /metrics
"""
