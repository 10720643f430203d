"""`janus-edge export MODEL_DIR OUT_DIR [--precision fp32|fp16] [--max-batch N] [--max-context N] [--vae DIR]
[--kv-form in_place|ort_gqa]`"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from janus_edge.export.metadata import ROLES
    from janus_edge.export.precision import EXPORT_WORDS
    from janus_edge.runtime.kv import KV_FORMS

    parser.add_argument("model_dir", help="Janus checkpoint directory (Hugging Face or original DeepSeek format)")
    parser.add_argument("out_dir", help="export directory to write (graphs, tokenizer, janus_edge.json)")
    parser.add_argument("--precision", choices=[",".join(words) for words in EXPORT_WORDS], default="fp32",
                        help="int8, w8 and w4 come from `janus-edge calibrate` (export/precision.py)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="largest batch of rows (generation uses 2 rows per image for CFG; default 8)")
    parser.add_argument("--max-context", type=int, default=4096, help="largest total sequence (default 4096)")
    parser.add_argument("--family", choices=list(ROLES), default=None,
                        help="prompt format (default: from the checkpoint; janus = Janus-1.3B roles)")
    parser.add_argument("--vae", default=None,
                        help="JanusFlow only: the SDXL VAE directory in diffusers' layout (stabilityai/sdxl-vae)")
    parser.add_argument("--kv-form", choices=KV_FORMS, default="in_place",
                        help="decoder attention: in_place (plain ONNX, every backend; default) or ort_gqa (ONNX "
                             "Runtime's fused GroupQueryAttention, which can hold an int8 cache: ONNX Runtime only)")


def run(args) -> int:
    from janus_edge.export.exporter import export

    export(args.model_dir, args.out_dir, args.precision, args.max_batch, args.max_context, args.family, vae=args.vae,
           kv_form=args.kv_form)
    return 0
