"""`janus-edge understand EXPORT_DIR --image PATH [--image PATH ...] --question TEXT`: streams the answer."""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    parser.add_argument("export_dir", help="directory written by `janus-edge export`")
    parser.add_argument("--image", action="append", default=[], help="image file (repeat for several)")
    parser.add_argument("--question", required=True, help="the question about the image(s)")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="answer length limit (default 512)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"],
                        help="onnxruntime on an export directory, tensorrt on an engine directory")
    parser.add_argument("--provider", action="append", default=None,
                        help="ONNX Runtime execution provider, e.g. CUDAExecutionProvider (repeat for fallbacks)")


def run(args) -> int:
    from janus_edge.runtime import JanusRuntime

    options = {"providers": args.provider} if args.provider else {}
    runtime = JanusRuntime.load(args.export_dir, backend=args.backend, **options)
    pieces = runtime.stream_understand(args.image, args.question, max_new_tokens=args.max_new_tokens,
                                       temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                                       seed=args.seed)
    for piece in pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0
