"""`janus-edge tiny OUT_DIR [--format hf|original] [--seed N] [--config tiny|janus-pro-1b|janus-pro-7b]`
`janus-edge tiny OUT_DIR --family janusflow [--config tiny|janusflow-1.3b]` (writes the VAE to OUT_DIR/vae)"""

from __future__ import annotations


def add_arguments(parser) -> None:
    from janus_edge.export.families import FAMILIES

    families = sorted(FAMILIES, key=lambda f: f.name)
    parser.add_argument("out_dir", help="directory to write the checkpoint into")
    parser.add_argument("--family", choices=[f.name for f in families], default="janus-pro",
                        help="janusflow writes DeepSeek's JanusFlow layout and a diffusers VAE in OUT_DIR/vae")
    parser.add_argument("--format", choices=["hf", "original"], default="hf",
                        help="Hugging Face (safetensors) or original DeepSeek (pytorch_model.bin) layout")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--config", default="tiny", choices=["tiny"] + [name for f in families for name in f.published],
                        help="tiny (default) or a full-size config with random weights, for benchmarks")
    parser.add_argument("--max-shard-size", default=None, help="shard the HF safetensors, e.g. 2GB")


def run(args) -> int:
    from janus_edge.export.families import family_named
    from janus_edge.runtime.errors import RequestError

    family = family_named(args.family)
    if args.config not in ("tiny",) + family.published:
        raise RequestError(f"--config {args.config} is not a {args.family} model",
                           f"use --config {' or '.join(('tiny',) + family.published)} with --family {args.family}")
    from janus_edge.export.memory import peak_memory_line

    print(f"{family.write_tiny(args.out_dir, args.format, args.seed, args.config, args.max_shard_size)}; "
          f"{peak_memory_line()}")
    return 0
