"""`janus-edge gpu-check [EXPORT_DIR] [--engines DIR] [--json REPORT]`: check this GPU machine end to end against
ONNX Runtime on the CPU and write the report to send back (janus_edge/gpu_check.py)."""

from __future__ import annotations

from pathlib import Path


def add_arguments(parser) -> None:
    parser.add_argument("export_dir", nargs="?", default=None,
                        help="an ONNX export (a tiny one from `janus-edge tiny` + `janus-edge export` will do); "
                             "without it only the machine is checked")
    parser.add_argument("--engines", default=None,
                        help="engines built from EXPORT_DIR on this machine; an empty or new directory: built "
                             "there (default: built into a temporary directory)")
    parser.add_argument("--json", default=None, help="write the report (JSON) here")


def run(args) -> int:
    from janus_edge.gpu_check import run_gpu_check

    report = run_gpu_check(Path(args.export_dir) if args.export_dir else None,
                           Path(args.engines) if args.engines else None, Path(args.json) if args.json else None)
    print(report.summary())
    return report.exit_code
