"""The OpenAI-compatible API of the double: the route table (in vLLM's order), authentication
(`--api-key`), the 503 mode, which runner serves which API, and the small routes (health,
version, models, metrics)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

from .config import Config
from .env import env_flag, env_float
from .errors import Errors
from .generation import Generation
from .http_server import Dispatch, Request, Response, json_response
from .metrics import Metrics
from .pooling import Pooling

# a route that takes the request's JSON body
BodyHandler = Callable[[dict, asyncio.StreamWriter], Awaitable[Response]]

# the runners (Config.mode) that serve an API
GENERATE = ("generate",)
EMBED = ("embed",)
POOLING = ("embed", "classify")


class API:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.http_503 = env_flag("KIT_DOUBLE_HTTP_503")
        self.errors = Errors(cfg.nested_errors, cfg.served_names)
        self.metrics = Metrics()
        token_delay = env_float("KIT_DOUBLE_TOKEN_DELAY_MS", 0.0) / 1000.0
        gen = Generation(cfg, self.errors, self.metrics, token_delay)
        pool = Pooling(cfg, self.errors, self.metrics)
        # the POST routes of each API, with the runners that serve it
        chat = self.body_route("Chat Completions API", GENERATE, gen.chat)
        completions = self.body_route("Completions API", GENERATE, gen.completions)
        embeddings = self.body_route("Embeddings API", EMBED, pool.embeddings)
        rerank = self.body_route("Rerank (Score) API", POOLING, pool.rerank)
        score = self.body_route("Score API", POOLING, pool.score)
        self.routes: dict[str, dict[str, Dispatch]] = {
            "/health": {"GET": self.health},
            "/ping": {"GET": self.health, "POST": self.health},
            "/version": {"GET": self.version},
            "/metrics": {"GET": self.metrics_text},
            "/v1/models": {"GET": self.models},
            "/v1/chat/completions": {"POST": chat},
            "/v1/completions": {"POST": completions},
            "/v1/embeddings": {"POST": embeddings},
            "/rerank": {"POST": rerank},
            "/v1/rerank": {"POST": rerank},
            "/v2/rerank": {"POST": rerank},
            "/score": {"POST": score},
            "/v1/score": {"POST": score},
        }

    def body_route(self, api: str, modes: tuple[str, ...], handler: BodyHandler) -> Dispatch:
        """`handler` as a route of `api`, which runners in `modes` serve: it gets the request's
        JSON body; other runners, and unusable bodies, get vLLM's error answer."""

        async def route(req: Request, writer: asyncio.StreamWriter) -> Response:
            if self.cfg.mode not in modes:
                return self.errors.unsupported(api)
            body, problem = self.errors.json_body(req)
            if problem:
                return problem
            assert body is not None
            return await handler(body, writer)

        return route

    async def dispatch(self, req: Request, writer: asyncio.StreamWriter) -> Response:
        self.metrics.http_requests += 1
        methods = self.routes.get(req.path)
        if methods is None:
            return Response(404, b'{"detail":"Not Found"}')
        handler = methods.get(req.method)
        if handler is None:
            return Response(405, b'{"detail":"Method Not Allowed"}')
        if (
            self.cfg.api_keys
            and req.path.startswith("/v1")
            and req.method != "OPTIONS"
            and req.headers.get("authorization") not in self.cfg.api_keys
        ):
            return Response(401, b'{"error":"Unauthorized"}')
        if self.http_503 and req.path not in ("/version", "/metrics"):
            if req.path in ("/health", "/ping"):
                return Response(503)
            return self.errors.error(
                "EngineCore encountered an issue. See stack trace (above) for the root cause.",
                "EngineDeadError",
                503,
            )
        return await handler(req, writer)

    # ------------------------------------------------------------------ simple routes
    async def health(self, req, writer) -> Response:
        return Response(200)

    async def version(self, req, writer) -> Response:
        return json_response({"version": self.cfg.version})

    async def models(self, req, writer) -> Response:
        c = self.cfg
        data = []
        for name in c.served_names:
            data.append(
                {
                    "id": name,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "vllm",
                    "root": c.model,
                    "parent": None,
                    "max_model_len": c.max_model_len,
                    "permission": [
                        {
                            "id": f"modelperm-{uuid.uuid4().hex}",
                            "object": "model_permission",
                            "created": int(time.time()),
                            "allow_create_engine": False,
                            "allow_sampling": True,
                            "allow_logprobs": True,
                            "allow_search_indices": False,
                            "allow_view": True,
                            "allow_fine_tuning": False,
                            "organization": "*",
                            "group": None,
                            "is_blocking": False,
                        }
                    ],
                }
            )
        return json_response({"object": "list", "data": data})

    async def metrics_text(self, req, writer) -> Response:
        text = self.metrics.text(self.cfg.served_names[0])
        return Response(200, text.encode(), b"text/plain; version=0.0.4; charset=utf-8")
