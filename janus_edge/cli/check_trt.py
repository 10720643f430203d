"""`janus-edge check-trt EXPORT_DIR [--trt-version 10.3|10.16|11]`: static TensorRT parser support check."""

from __future__ import annotations


def add_arguments(parser) -> None:
    parser.add_argument("export_dir")
    parser.add_argument("--trt-version", action="append", choices=["10.3", "10.16", "11"], default=None,
                        help="version(s) to check (default: all three)")


def run(args) -> int:
    from janus_edge.export.tensorrt.sampler_graph import sampler_graph
    from janus_edge.export.tensorrt.check import VERSIONS, check_export, format_findings
    from janus_edge.runtime.tensor_names import SAMPLERS

    versions = tuple(args.trt_version or VERSIONS)
    samplers = {name: sampler_graph(cfg=cfg) for name, cfg in SAMPLERS.items()}
    findings = check_export(args.export_dir, versions, samplers)
    print(format_findings(findings, versions))
    return 1 if any(f.severity == "error" for f in findings) else 0
