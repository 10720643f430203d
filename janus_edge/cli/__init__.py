"""`janus-edge`: one command per module; each module has `add_arguments(parser)` and `run(args) -> int`.

Commands are imported only when chosen, so `janus-edge understand` on a Jetson never imports torch.
A user error (`JanusEdgeError`) prints one line and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "tiny": "write the embedded default model: a tiny random-weight Janus-Pro checkpoint",
    "export": "export a checkpoint to ONNX graphs + janus_edge.json",
    "compare": "check every exported graph against the PyTorch reference",
    "calibrate": "make a reduced-precision export (int8, w8, w4, fp16) from an fp32 one",
    "accuracy": "measure a reduced-precision export against the fp32 one",
    "check-trt": "check that TensorRT's ONNX parser supports every node of an export",
    "build": "build TensorRT engines from an export for a target GPU",
    "understand": "answer a question about images (streams the answer)",
    "generate": "generate images from a text prompt",
    "demo": "make the tiny model, export it, answer a question and generate images",
    "bench": "measure latency and memory of exports (and the PyTorch reference) side by side",
    "plan": "memory budget and latency floors of a model on a target",
    "verify": "hash every file of an export against its manifest (loading re-hashes only changed files)",
}


def main(argv: list[str] | None = None) -> int:
    from janus_edge import __version__

    parser = argparse.ArgumentParser(prog="janus-edge", description="Janus-Pro on NVIDIA edge and data-center GPUs")
    parser.add_argument("--version", action="version", version=f"janus-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_arguments(command_parser)
    args = parser.parse_args(argv)
    from janus_edge.runtime.errors import JanusEdgeError

    try:
        return int(_module(args.command).run(args) or 0)
    except JanusEdgeError as exc:
        fix = f"; fix: {exc.hint}" if exc.hint else ""
        print(f"janus-edge {args.command}: error: {exc.message}{fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _module(name: str):
    return importlib.import_module(f"janus_edge.cli.{name.replace('-', '_')}")
