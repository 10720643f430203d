"""`janus-edge understand EXPORT_DIR --image PATH [--image PATH ...] --question TEXT`: streams the answer."""

from __future__ import annotations

import sys

from janus_edge.cli.runtime_options import add_runtime_arguments, load_runtime


def add_arguments(parser) -> None:
    add_runtime_arguments(parser)
    parser.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    parser.add_argument("--question", required=True, help="the question about the image(s)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (default 512)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)


def run(args) -> int:
    runtime = load_runtime(args)
    pieces = runtime.stream_understand(args.image, args.question, max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                       seed=args.seed)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
