"""`janus-edge serve DIR`: an OpenAI-compatible HTTP server (chat completions with images, image generations)."""

from __future__ import annotations

import sys
from pathlib import Path

from janus_edge.cli.runtime_options import add_runtime_arguments, load_runtime
from janus_edge.runtime.errors import RequestError


def add_arguments(parser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key", default=None, help="require Authorization: Bearer KEY (default: no key)")
    parser.add_argument("--max-queue", type=int, default=64, help="requests waiting or running before 429")
    parser.add_argument("--allow-local-files", default=None, metavar="DIR",
                        help="let image_url parts name local files under DIR (default: data URLs only)")
    parser.add_argument("--model-name", default=None, help="the id /v1/models lists (default: the directory name)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a request may wait and run")
    parser.add_argument("--max-body-mb", type=float, default=20.0, help="request body limit in MiB")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def run(args) -> int:
    import uvicorn  # a missing [serve] extra is named by the CLI's missing-library handler

    from janus_edge.serve.app import ServeConfig, create_app

    if args.max_queue < 1 or args.timeout <= 0 or args.max_body_mb <= 0:
        raise RequestError("--max-queue, --timeout and --max-body-mb must be positive", "pass positive values")
    allowed = None
    if args.allow_local_files:
        allowed = Path(args.allow_local_files).resolve()
        if not allowed.is_dir():
            raise RequestError(f"--allow-local-files {allowed} is not a directory", "name an existing folder")
    runtime = load_runtime(args)
    config = ServeConfig(model_name=args.model_name or Path(args.export_dir).resolve().name, api_key=args.api_key,
                         max_queue=args.max_queue, allow_local_files=allowed,
                         max_body_bytes=int(args.max_body_mb * 1024 * 1024), timeout_s=args.timeout)
    app = create_app(runtime, config)
    print(f"janus-edge serve: {config.model_name} on http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=5)
    return 0
