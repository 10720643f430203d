"""`janus-edge build EXPORT_DIR ENGINE_DIR --target orin-nano-8gb|orin-nx-16gb|agx-orin-64gb|thor|datacenter`"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from janus_edge.export.tensorrt.targets import TARGETS

    parser.add_argument("export_dir", help="an export (fp16, or a calibrated int8/w8/w4 one)")
    parser.add_argument("engine_dir", help="where to write the engines")
    parser.add_argument("--target", required=True, choices=list(TARGETS))
    parser.add_argument("--images", type=int, default=None,
                        help="images per generation request, 2 CFG rows each, as `plan` takes it (default 1)")
    parser.add_argument("--context", type=int, default=None, help="tokens per row (default: the target's limit)")
    parser.add_argument("--timing-cache", default=None, help="default: ~/.cache/janus-edge/timing-GPU-TRT.cache")
    parser.add_argument("--force", action="store_true",
                        help="build even if this GPU is not the target's (the engines then run only on this GPU)")


def run(args) -> int:
    from janus_edge.export.tensorrt.build import build

    build(args.export_dir, args.engine_dir, args.target, args.timing_cache, args.images, args.context, args.force)
    return 0
