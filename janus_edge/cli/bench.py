"""`janus-edge bench [DIR ...] [--reference MODEL_DIR] [--reference-configs auto|LIST] [--stages LIST] [--json F]`"""

from __future__ import annotations

from janus_edge.bench.common import IMAGE_COUNTS, STAGES, UNDERSTAND_BATCHES
from janus_edge.runtime.pipelines.speculative import DEFAULT_WINDOW


def _ints(text: str) -> tuple:
    return tuple(int(x) for x in text.split(",") if x)


def add_arguments(parser) -> None:
    parser.add_argument("directories", nargs="*",
                        help="export or engine directories to measure side by side (the manifest names the backend)")
    parser.add_argument("--reference", default=None, help="checkpoint directory: also measure PyTorch (transformers)")
    parser.add_argument("--reference-configs", default="auto",
                        help="comma-separated ATTENTION-DTYPE rows, e.g. sdpa-bf16,sdpa-fp32,eager-fp32 (eager is a "
                             "labelled extra; static-compile-bf16 on GPUs); auto: sdpa-bf16 where the CPU or GPU "
                             "runs bf16 natively, sdpa-fp32, and static-compile-bf16 on a GPU")
    parser.add_argument("--threads", type=int, default=0, help="PyTorch threads for the reference (0: every core)")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help=f"stages to run, comma-separated: {','.join(STAGES)}")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per stage (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--past", type=int, default=600, help="KV length at which decode steps are timed")
    parser.add_argument("--prompt-lengths", default="64,640", help="prefill lengths, comma-separated")
    parser.add_argument("--image-counts", default=",".join(map(str, IMAGE_COUNTS)),
                        help="images per generation call to time (those within the export's max batch)")
    parser.add_argument("--image-runs", type=int, default=1,
                        help="full generation calls (every image token) per image count")
    parser.add_argument("--understand-batches", default=",".join(map(str, UNDERSTAND_BATCHES)),
                        help="understanding requests per call to time")
    parser.add_argument("--understand-tokens", type=int, default=16, help="max new tokens per understanding request")
    parser.add_argument("--speculative", default="",
                        help="comma-separated speculative decoding modes (sjd,maximal,gumbel) to time next to the "
                             "plain loop: passes per image, tokens per pass, seconds per image, and the modelled GPU "
                             "effect; acceptance on random weights says nothing about real ones")
    parser.add_argument("--window", type=int, default=None, help=f"positions per pass for --speculative (default {DEFAULT_WINDOW})")
    parser.add_argument("--json", default=None, help="write the report as JSON (janus_edge/data/bench.schema.json)")
    parser.add_argument("--plot", default=None, help="write a PNG chart comparing the rows stage by stage")


def run(args) -> int:
    from janus_edge.bench import Settings, check_directory, format_report, plot, run_bench, write_json
    from janus_edge.runtime.errors import RequestError
    from janus_edge.runtime.pipelines import requests

    if not args.directories and not args.reference:
        raise RequestError("nothing to measure", "pass export or engine directories, --reference MODEL_DIR, or both")
    stages = tuple(s for s in args.stages.split(",") if s)
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise RequestError(f"unknown stages {', '.join(unknown)}", f"choose from {','.join(STAGES)}")
    for directory in args.directories:
        check_directory(directory)  # a clear error before any measuring starts
    configs = []
    if args.reference:
        from janus_edge.bench.reference import parse_configs
        from janus_edge.export.checkpoint import load_config

        load_config(args.reference)  # a clear error for a directory that is not a checkpoint
        configs = parse_configs(args.reference_configs, gpu=_has_cuda())
    modes = tuple(m for m in args.speculative.split(",") if m)
    checked = [requests.speculative(mode, args.window) for mode in modes or (None,)]  # errors before measuring
    window = checked[0][1] if modes else Settings.window
    settings = Settings(runs=args.runs, warmup=args.warmup, past=args.past, prompt_lengths=_ints(args.prompt_lengths),
                        image_counts=_ints(args.image_counts), image_runs=args.image_runs,
                        understand_batches=_ints(args.understand_batches), understand_tokens=args.understand_tokens,
                        stages=stages, threads=args.threads, speculative=modes, window=window)
    report = run_bench(args.directories, args.reference, settings, configs)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    if args.plot:
        plot(report, args.plot)
    return 1 if any(r["error"] for r in report["results"]) else 0


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
