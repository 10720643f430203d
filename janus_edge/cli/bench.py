"""`janus-edge bench EXPORT_DIR [EXPORT_DIR ...] [--reference MODEL_DIR] [--runs N] [--json F] [--plot F]`"""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("directories", nargs="+", help="export directories to measure side by side")
    parser.add_argument("--reference", default=None, help="checkpoint directory: also measure PyTorch (transformers)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per stage (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--past", type=int, default=600, help="KV length at which decode steps are timed")
    parser.add_argument("--prompt-lengths", default="64,640", help="prefill lengths, comma-separated")
    parser.add_argument("--images", type=int, default=1, help="images per generation request (CFG batch 2n)")
    parser.add_argument("--image-runs", type=int, default=1, help="full 576-step generations to time (0 skips)")
    parser.add_argument("--json", default=None, help="write the results as JSON (schema janus-edge-bench/1)")
    parser.add_argument("--plot", default=None, help="write a PNG chart comparing the directories stage by stage")


def run(args) -> int:
    from janus_edge.bench import Settings, format_report, plot, run_bench, write_json
    from janus_edge.runtime.manifest import load_manifest

    for directory in args.directories:
        load_manifest(directory)  # a clear error before any measuring starts
    settings = Settings(runs=args.runs, warmup=args.warmup, past=args.past, images=args.images,
                        image_runs=args.image_runs,
                        prompt_lengths=tuple(int(x) for x in args.prompt_lengths.split(",") if x))
    report = run_bench(args.directories, args.reference, settings)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    if args.plot:
        plot(report, args.plot)
    return 1 if any(r["error"] for r in report["results"]) else 0
