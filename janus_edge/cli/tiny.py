"""`janus-edge tiny OUT_DIR [--format hf|original] [--seed N] [--config tiny|janus-pro-1b|janus-pro-7b]`
`janus-edge tiny OUT_DIR --family janusflow [--config tiny|janusflow-1.3b]` (writes the VAE to OUT_DIR/vae)"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("out_dir", help="directory to write the checkpoint into")
    parser.add_argument("--family", choices=["janus-pro", "janusflow"], default="janus-pro",
                        help="janusflow writes DeepSeek's JanusFlow layout and a diffusers VAE in OUT_DIR/vae")
    parser.add_argument("--format", choices=["hf", "original"], default="hf",
                        help="Hugging Face (safetensors) or original DeepSeek (pytorch_model.bin) layout")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    parser.add_argument("--config", default="tiny", choices=["tiny", "janus-pro-1b", "janus-pro-7b", "janusflow-1.3b"],
                        help="tiny (default) or a full-size config with random weights, for benchmarks")
    parser.add_argument("--max-shard-size", default=None, help="shard the HF safetensors, e.g. 2GB")


def run(args) -> int:
    from janus_edge.runtime.errors import RequestError

    flow_configs = ("tiny", "janusflow-1.3b")
    if (args.family == "janusflow") != (args.config in flow_configs) and args.config != "tiny":
        raise RequestError(f"--config {args.config} is not a {args.family} model",
                           "use --config tiny or janusflow-1.3b with --family janusflow, and a Janus-Pro config "
                           "without it")
    if args.family == "janusflow":
        from janus_edge.export.janusflow.tiny import write_janusflow

        path = write_janusflow(args.out_dir, args.seed, args.config)
        print(f"wrote a {args.config} JanusFlow checkpoint (DeepSeek layout, seed {args.seed}) to {path}, "
              f"its VAE to {path / 'vae'}")
        return 0
    from janus_edge.export.tiny import write_checkpoint

    path = write_checkpoint(args.out_dir, args.format, args.seed, args.config, args.max_shard_size)
    print(f"wrote a {args.config} Janus-Pro checkpoint ({args.format} format, seed {args.seed}) to {path}")
    return 0
