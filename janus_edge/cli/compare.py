"""`janus-edge compare MODEL_DIR EXPORT_DIR`: parity of every graph with PyTorch; exits 1 on any failure."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("model_dir", help="the checkpoint the export was made from")
    parser.add_argument("export_dir", help="the export directory to check")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--vae", default=None, help="JanusFlow only: the SDXL VAE directory the export was made with")
    parser.add_argument("--window-layers", type=int, default=None, metavar="N",
                        help="check the decoder N layers at a time (0: whole; default: whole unless its weights "
                             "in fp32 pass 8 GiB, then windows of about 4 GiB: a 7B export)")


def run(args) -> int:
    import sys

    from janus_edge.export.compare import compare, format_table
    from janus_edge.export.memory import peak_memory_line

    rows = compare(args.model_dir, args.export_dir, args.seed, vae=args.vae, window_layers=args.window_layers)
    print(format_table(rows))
    print(peak_memory_line(), file=sys.stderr)  # stdout's last line stays the verdict
    return 0 if all(r.ok for r in rows) else 1
