"""`janus-edge bench`: latency, throughput and memory of export and engine directories and of the PyTorch reference,
side by side, in one report that follows a JSON Schema (janus_edge/data/bench.schema.json).

Each directory and each reference configuration is measured in its own child process, one after the other, in the
same invocation, so that ratios between rows are meaningful on a noisy machine. Every timing is a median over its
runs after warm-up runs, with min, max and the run count. Decode steps are also given against two memory-bandwidth
floors: weight bytes only, and weight bytes plus the KV cache read at the past length (docs/BENCHMARKS.md).
"""

from .common import IMAGE_COUNTS, STAGES, UNDERSTAND_BATCHES, Result, Settings
from .exports import check_directory
from .reference import parse_configs
from .report import SCHEMA_ID, format_report, load_schema, plot, run_bench, validate_report, write_json

__all__ = ["IMAGE_COUNTS", "SCHEMA_ID", "STAGES", "UNDERSTAND_BATCHES", "Result", "Settings", "check_directory",
           "format_report", "load_schema", "parse_configs", "plot", "run_bench", "validate_report", "write_json"]
