"""`janus-edge calibrate EXPORT_DIR OUT_DIR --scheme int8|fp16|w8|w4[,...] [--images DIR] [--prompts FILE]
[--samples N]`"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("export_dir", help="an fp32 export directory (or fp16, for w8, w4 and fp16)")
    parser.add_argument("out_dir", help="the reduced-precision export to write")
    parser.add_argument("--scheme", required=True, help="int8, w8, w4, fp16, kv8 (int8 KV cache, ort_gqa exports) or a combination such as w4,kv8")
    parser.add_argument("--images", default=None, help="folder of calibration photographs (default: scikit-image's)")
    parser.add_argument("--prompts", default=None, help="file of prompts, one per line (default: a built-in list)")
    parser.add_argument("--samples", type=int, default=4, help="calibration images and generated token grids")


def run(args) -> int:
    from janus_edge.calibration.calibrate import calibrate

    calibrate(args.export_dir, args.out_dir, args.scheme, args.images, args.prompts, args.samples)
    return 0
