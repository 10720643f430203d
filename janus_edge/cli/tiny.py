"""`janus-edge tiny OUT_DIR [--format hf|original] [--seed N] [--config tiny|janus-pro-1b|janus-pro-7b]`"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="directory to write the checkpoint into")
    parser.add_argument("--format", choices=["hf", "original"], default="hf",
                        help="Hugging Face (safetensors) or original DeepSeek (pytorch_model.bin) layout")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--config", default="tiny", choices=["tiny", "janus-pro-1b", "janus-pro-7b"],
                        help="tiny (default) or a full-size config with random weights, for benchmarks")
    parser.add_argument("--max-shard-size", default=None, help="shard the HF safetensors, e.g. 2GB")


def run(args) -> int:
    from janus_edge.export.tiny import write_checkpoint

    path = write_checkpoint(args.out_dir, args.format, args.seed, args.config, args.max_shard_size)
    print(f"wrote a {args.config} Janus-Pro checkpoint ({args.format} format, seed {args.seed}) to {path}")
    return 0
