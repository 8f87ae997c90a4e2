"""`rwkv7-provider serve`: run the OpenAI-compatible server with uvicorn.

    rwkv7-provider serve                                    # the embedded guard as model `default`
    rwkv7-provider serve --model g1=/models/rwkv7-g1.pth --model guard=default
    rwkv7-provider serve --config models.yaml               # names, checkpoints, parameters, prompts, limits
    rwkv7-provider serve --replicas 2                       # two replicas on Ray Serve (the [ray] extra)

Every model's checkpoint is checked (headers and memory) before the server starts, so a wrong path fails
here with the provider's message instead of in the background.
"""

from __future__ import annotations

import argparse
import logging

from ..errors import ParameterError, missing_dependency
from .config import (
    API_KEY_ENV,
    DEFAULT_HOST,
    DEFAULT_PORT,
    build_config,
    default_model,
    load_config,
    parse_model_argument,
)

log = logging.getLogger(__name__)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="rwkv7-provider serve", description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=None, help=f"address to bind (default {DEFAULT_HOST}; any other "
                        f"address needs an API key)")
    parser.add_argument("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="serve the checkpoint PATH as NAME (repeatable); PATH `default` is the embedded "
                        "guard with the shipped moderation settings")
    parser.add_argument("--config", metavar="YAML", help="served models and limits from a YAML file "
                        "(see the README, 'Run it as a service')")
    parser.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' on every request "
                        f"(default: ${API_KEY_ENV}; prefer the variable: arguments show in `ps`)")
    parser.add_argument("--max-queue", type=int, default=None, help="requests in flight at once; more get 429 "
                        "(default 256)")
    parser.add_argument("--request-timeout", type=float, default=None, help="seconds per request, 504 after "
                        "(default 300)")
    parser.add_argument("--max-body-bytes", type=int, default=None, help="largest request body, 413 above "
                        "(default 1 MiB)")
    parser.add_argument("--max-tokens-limit", type=int, default=None, help="server-wide cap on max_tokens "
                        "(each model also has its own max_tokens_limit, default 8192)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="uvicorn's log level (access and error logs)")
    scale = parser.add_argument_group("scale-out on Ray Serve (the [ray] extra; see the README, 'Scale out')")
    scale.add_argument("--replicas", type=int, default=None, metavar="N",
                       help="serve N replicas on Ray Serve behind one endpoint (default: one process, no Ray)")
    scale.add_argument("--routing", choices=["default", "affinity"], default="default",
                       help="default: Ray's (power of two choices); affinity: a prompt goes to the replica "
                       "holding its prefix's state, through one more hop")
    scale.add_argument("--ray-address", default=None, help="join this Ray cluster (e.g. `auto` after "
                       "`ray start --head`); default: start a local one and stop it on exit")
    scale.add_argument("--threads", type=int, default=None, help="with --replicas: torch threads per replica "
                       "(default: the node's cores divided by the replicas)")
    scale.add_argument("--cache-dir", default=None, help="with --replicas: the prefix state cache directory the "
                       "replicas share (warm starts), for models that set none")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        import uvicorn

        from .app import create_app
    except ModuleNotFoundError as e:
        raise missing_dependency(e, "server", "rwkv7-provider serve") from e
    from ..integrations.client import check_checkpoint

    limits = {"host": args.host, "port": args.port, "api_key": args.api_key, "max_queue": args.max_queue,
              "request_timeout": args.request_timeout, "max_body_bytes": args.max_body_bytes,
              "max_tokens_limit": args.max_tokens_limit}
    if args.config:
        config = load_config(args.config, **limits)
        if args.model:
            config = build_config([*config.models, *map(parse_model_argument, args.model)],
                                  **config.model_dump(exclude={"models"}))
    else:
        config = build_config([parse_model_argument(m) for m in args.model] or [default_model()], **limits)
    for served in config.models:
        check_checkpoint(served.settings)
    if args.replicas is None and (args.threads or args.cache_dir or args.ray_address):
        raise ParameterError("--threads, --cache-dir and --ray-address go with --replicas (without Ray, set "
                             "`threads` and `cache_dir` as model parameters)")
    if args.replicas is not None:
        if args.replicas < 1:
            raise ParameterError(f"--replicas must be at least 1, got {args.replicas}")
        try:
            from .ray_app import run
        except ModuleNotFoundError as e:
            raise missing_dependency(e, "ray", "rwkv7-provider serve --replicas") from e
        return run(config, replicas=args.replicas, routing=args.routing, address=args.ray_address,
                   threads=args.threads, cache_dir=args.cache_dir)
    log.info("serving %s on http://%s:%d/v1", ", ".join(m.name for m in config.models), config.host, config.port)
    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0
