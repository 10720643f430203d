"""The options every command that runs an export shares: which directory, which backend, which providers."""

from __future__ import annotations


def add_runtime_arguments(parser) -> None:
    parser.add_argument("export_dir", help="an export directory (onnxruntime) or an engine directory (tensorrt)")
    parser.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt"],
                        help="onnxruntime on an export directory, tensorrt on an engine directory")
    parser.add_argument("--provider", action="append", default=None,
                        help="ONNX Runtime execution provider: cpu, cuda, tensorrt (TensorRT's EP, CUDA's for the "
                             "rest) or a full name such as CUDAExecutionProvider (repeat for fallbacks)")


def load_runtime(args):
    from janus_edge.runtime import JanusRuntime

    options = {"providers": args.provider} if args.provider else {}
    return JanusRuntime.load(args.export_dir, backend=args.backend, **options)
